"""Cost of the default Stable Audio Open edit: ours against a reference-style loop.

The edit is the audio paper's code with SAO (AudioEditingCode ``main_run.py`` and its README): 200
steps, the edit running the last 100, source guidance 1, target guidance 12, eta 1, on SAO's own
sampler (DPM-Solver++(2M) SDE, each step solved for its noise map). Clips of 10 s and 47 s
(216 and 1013 latent frames at 2048 samples a frame, 44.1 kHz). The VAE is not timed (it runs
once per clip in both); the DiT calls are.

- reference-style: the call pattern of the audio paper's code: the WHOLE chain inverted (200 steps,
  not only the 100 the edit runs), one x_t per DiT call, then the edit with the unconditional and
  target branches in separate calls. It is written with this package's primitives
  (``ddpm_invert`` with batch 1 and a guidance that evaluates its branches one by one), so it
  computes the same numbers (its full-chain inversion takes a first-order step where the edit
  starts, as the edit does); only the schedule of the work differs.
- ours: ``LatentEditor.invert_latent`` (only the edit's 100 steps, x_t drawn independently and
  batched, ``--batch`` rows a call) and ``edit_latent`` (both branches in one call).

Columns: DiT calls, rows evaluated, wall seconds, peak memory (CUDA: ``max_memory_allocated``; CPU:
the peak resident size of a fresh process running that one configuration), and the relative
difference of our edit from the reference's (float rounding only).

Models: ``--size reduced`` (default: the 1.0 DiT's layout cut to 2 layers of 4 heads of 64, for a
CPU), ``full`` (``StableAudioDiTModel()``'s defaults, the 1.0 sizes: 24 layers, 24 heads of 64,
64 latent channels; for a GPU) or ``tiny`` (the test model). Random weights: the cost, not the sound.

    python benchmarks/bench_sao.py --size reduced --seconds 10 47 --steps 200 --tstart 100
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audio_edit.stable_audio import StableAudioModel  # noqa: E402
from audio_edit.tiny import build_tiny_sao  # noqa: E402
from image_core.editing import LatentEditor  # noqa: E402
from image_core.guidance import ClassifierFreeGuidance  # noqa: E402
from image_core.methods.ddpm import ddpm_edit, ddpm_invert  # noqa: E402
from image_core.schedule import Schedule  # noqa: E402

HOP, RATE = 2048, 44100


def build(size: str, device: str, dtype: torch.dtype) -> StableAudioModel:
    """The benchmark's model: the tiny test model with the DiT of ``size``."""
    from diffusers import StableAudioDiTModel

    components = build_tiny_sao()
    torch.manual_seed(0)  # the same random weights in every process
    if size == "full":
        components["transformer"] = StableAudioDiTModel()
    elif size == "reduced":
        components["transformer"] = StableAudioDiTModel(num_layers=2, num_attention_heads=4, num_key_value_attention_heads=2)
    if size != "tiny":  # the text and seconds states must have the DiT's conditioning widths
        from diffusers import StableAudioProjectionModel

        components["projection_model"] = StableAudioProjectionModel(text_encoder_dim=24, conditioning_dim=768, min_value=0, max_value=512)
    return StableAudioModel(components, torch.device(device), dtype)


class Counted:
    """A denoiser that counts its calls and rows."""

    def __init__(self, model: StableAudioModel) -> None:
        self.model, self.calls, self.rows = model, 0, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        self.calls += 1
        self.rows += x.shape[0]
        return self.model.predict_eps(x, t, cond)


class OneByOne:
    """Classifier-free guidance with its two branches in separate calls (the reference's pattern)."""

    def __init__(self, guidance: ClassifierFreeGuidance) -> None:
        self.guidance = guidance

    def __call__(self, x: torch.Tensor, t: torch.Tensor, j: int = 0) -> torch.Tensor:
        g = self.guidance
        eps_c = g.model(x, t, g.cond)
        if g.uncond is None:
            return eps_c
        eps_u = g.model(x, t, g.uncond)
        return eps_u + g.scales_like(eps_c) * (eps_c - eps_u)

    def take(self, index: torch.Tensor) -> OneByOne:
        return OneByOne(self.guidance.take(index))


def run_one(args: argparse.Namespace, which: str, seconds: float) -> dict:
    dtype = getattr(torch, args.dtype)
    model = build(args.size, args.device, dtype)
    frames = round(seconds * RATE / HOP)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, model.latent_channels, frames, generator=g, dtype=torch.float64).to(args.device)
    counted = Counted(model)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        if which == "ours":
            editor = LatentEditor(model, counted, inversion_batch_size=args.batch, progress=False)
            inv = editor.invert_latent(x0, "a tone", args.steps, args.tstart, args.cfg_src, 1.0, [0])
            edited = editor.edit_latent(inv, "jazz piano", args.cfg_tar)
        else:
            schedule = Schedule.from_config(model.scheduler_config, args.steps)
            skip = args.steps - args.tstart
            weights = schedule.weights.clone()
            weights[skip] = 0  # the edit's first step is first-order (it has no step before it in the edit)
            schedule = replace(schedule, weights=weights)
            enc = model.encode_prompts(["a tone", "jazz piano", ""])
            take = lambda i: {k: v[i : i + 1] for k, v in enc.items()}  # noqa: E731
            source = ClassifierFreeGuidance(counted, take(0), None if args.cfg_src == 1 else take(2), args.cfg_src)
            target = ClassifierFreeGuidance(counted, take(1), take(2), args.cfg_tar)
            xts, zs, residual = ddpm_invert(OneByOne(source), schedule, x0, args.steps, 1.0, [0], 1, False)  # type: ignore[arg-type]
            edited = ddpm_edit(OneByOne(target), schedule, xts[:, skip], zs[:, skip:], 1.0, residual, progress=False)  # type: ignore[arg-type]
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        memory = torch.cuda.max_memory_allocated() / 2**20
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds_taken = time.perf_counter() - start
    torch.save(edited.cpu(), Path(args.scratch) / f"{which}-{seconds}.pt")
    return {"which": which, "seconds": seconds, "frames": frames, "calls": counted.calls, "rows": counted.rows,
            "wall_s": round(seconds_taken, 2), "peak_mib": round(memory, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "reduced", "full"], default="reduced")
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 47.0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--tstart", type=int, default=100)
    parser.add_argument("--cfg-src", type=float, default=1.0)
    parser.add_argument("--cfg-tar", type=float, default=12.0)
    parser.add_argument("--batch", type=int, default=16, help="x_t rows per DiT call of our inversion")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--scratch", default="/tmp")
    parser.add_argument("--one", nargs=2, metavar=("WHICH", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a fresh process per configuration: its peak resident size is that configuration's
        print(json.dumps(run_one(args, args.one[0], float(args.one[1]))))
        return
    rows = []
    for seconds in args.seconds:
        for which in ("reference", "ours"):
            argv = [sys.executable, __file__, *sys.argv[1:], "--one", which, str(seconds)]
            rows.append(json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout.splitlines()[-1]))
        ref, ours = (torch.load(Path(args.scratch) / f"{w}-{seconds}.pt") for w in ("reference", "ours"))
        rows[-1]["rel_diff"] = f"{((ours - ref).norm() / ref.norm()).item():.1e}"
    print(f"size={args.size} device={args.device} dtype={args.dtype} steps={args.steps} tstart={args.tstart}")
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
