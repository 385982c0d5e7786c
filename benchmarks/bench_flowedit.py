"""DDPM inversion against FlowEdit against SDEdit, on the same model and at the same strength, in one table.

The three prompt-driven edits of the package, each run as a user runs it:

- ddpm-inversion: edit-friendly DDPM inversion of the input (``ddpm_invert``: the x_t and noise maps of the
  last ``t_start`` steps, timesteps batched into few model calls) then the edit from it (``ddpm_edit``); calls,
  time and memory are of both together;
- flowedit: FlowEdit (``flowedit``, Kulikov et al.): no inversion, ``n_max`` steps of the target-minus-source
  difference of the two guided predictions on the same noised input (``n_min`` 0, ``n_avg`` 1);
- sdedit: SDEdit (``sdedit``): the input noised to ``t_start`` steps before the end, then sampled with the target.

Same strength: all three change the last ``t_start`` = ``n_max`` steps of a ``--steps`` chain ("steps
edited"). Guidance: one source scale and one target scale shared by the methods (SDEdit has no source side).

Two worlds:

- closed form (``tests/analytic.py``): the exact denoiser of a two-class Gaussian mixture over 48 coordinates,
  classes "A" and "B" whose means (+-``--separation`` times a direction of unit RMS) differ on 16 coordinates
  only, on the VP path (Stable Diffusion's scheduler) and on the rectified-flow path
  (``FlowMatchEulerDiscreteScheduler``, shift 3); ``--rows`` class-A draws, each edited "A" -> "B" with its own
  seed, at each of the ``--strengths`` fractions of the chain. Besides the cost, the adherence / preservation
  trade-off: ``p(B)``, the mean posterior probability of the target class of the edits (adherence; 1 is best),
  ``dist``, the mean distance of an edit to its input over all coordinates, and ``dist kept``, over the 32
  coordinates where the classes agree (preservation: what the edit has no reason to change; 0 is best). The
  scales (distance of the class means, spread of a draw) are printed under the table.
- models (random weights: cost only, never quality), through the editors (``invert`` + ``edit``, ``flowedit``,
  ``sdedit``, latents out: encoding the input is timed, decoding is not), at ``--model-strength``:
  ``tiny-acestep`` (ACE-Step 1.5, rectified flow) on a ``--seconds`` stereo clip; with ``--models
  tiny-acestep,sd`` also Stable Diffusion (VP): the tiny test model on a 64 x 64 picture, or with ``--size
  real`` SD 1.5's layout at 512 x 512 (UNet 860M, built as ``bench_gpu.py`` builds it; float16 on CUDA).
  ``--size real`` also lengthens the clip to 10 s (ACE-Step stays the tiny model: no real-size one is built
  offline).

Columns: denoiser calls and rows (rows of the batches: both guidance branches, source and target sides),
network forwards (``net fwd``: of the UNet / transformer; ACE-Step runs its transformer once per prompt length
in a batch), wall time (median and best of ``--repeats`` runs after a counted warm-up run, seconds; the best is
the steadier figure on a shared machine), peak memory over
the timed runs (MiB; CUDA: ``torch.cuda.max_memory_allocated`` above the allocation at the start, weights
excluded; CPU: growth of the resident set, coarse: a few MiB are noise) and ``inv MiB``, what the DDPM
inversion holds between inversion and edit (x_t and noise maps of every edited step: it grows with the
strength; FlowEdit and SDEdit hold none).

    python benchmarks/bench_flowedit.py                                   # CPU: under a minute on 2 cores
    python benchmarks/bench_flowedit.py --models none --steps 50 --strengths 0.1,0.2,0.3,0.5   # closed form only
    python benchmarks/bench_flowedit.py --models tiny-acestep,sd --threads 2
    python benchmarks/bench_flowedit.py --device cuda --size real --models tiny-acestep,sd     # GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from analytic import CONFIGS, GaussianMixtureModel  # noqa: E402
from bench_audio import PeakMemory  # noqa: E402
from common import CallCount, count_unet_calls, print_table, synchronize  # noqa: E402

from image_core.cli_common import set_threads  # noqa: E402
from image_core.editing import LatentEditor  # noqa: E402
from image_core.methods.ddpm import ddpm_edit, ddpm_invert  # noqa: E402
from image_core.methods.flowedit import flowedit  # noqa: E402
from image_core.methods.sdedit import sdedit  # noqa: E402
from image_core.schedule import Schedule  # noqa: E402

METHODS = ("ddpm-inversion", "flowedit", "sdedit")
DIM, REGION = 48, slice(8, 24)  # the classes differ on coordinates 8..23 only
KEPT = torch.ones(DIM, dtype=torch.bool)
KEPT[REGION] = False  # where the classes agree: an edit A -> B has nothing to change there
CLOSED_CFG = (1.0, 2.0)  # source, target guidance in the closed form
MODEL_CFG = (3.5, 13.5)  # FlowEdit's defaults (the paper's SD3 settings), for all three methods
PROMPTS = {"tiny-acestep": ("a piano playing a melody", "an electric guitar playing a melody"),
           "sd": ("a photo of a cat sitting on a bench", "a photo of a dog sitting on a bench")}
MIB = 2**20

Row = dict[str, Any]


def run_times(fn: Callable[[], Any], repeats: int, device: torch.device) -> list[float]:
    """Wall times of ``repeats`` runs (after the caller's warm-up), GPU work included."""
    times = []
    for _ in range(max(1, repeats)):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def measured(run: Callable[[], Any], counter: Callable[[], Any], device: torch.device, repeats: int) -> tuple[Row, Any]:
    """One counted run (``counter()`` a context manager yielding (denoiser count, network count or None)),
    which is also the warm-up, then ``repeats`` timed ones, over which the peak memory is taken;
    (row, the counted run's result)."""
    with counter() as (calls, net):
        out = run()
    with PeakMemory(device) as memory:
        seconds = run_times(run, repeats, device)
    row = {"calls": calls.calls, "rows": calls.rows, "net": net.calls if net is not None else None,
           "peak_mib": memory.peak / MIB,
           "time_s": statistics.median(seconds), "best_s": min(seconds)}
    return row, out


# ------------------------------------------------------------------------------------------ closed form


def class_b_probability(model: GaussianMixtureModel, x: torch.Tensor) -> torch.Tensor:
    """p(B | x) under the mixture with equal weights."""
    loglik = torch.stack([-0.5 * ((x - model.means[c]) ** 2 / model.var).sum(-1) for c in (0, 1)], 1)
    return torch.softmax(loglik, 1)[:, 1]


def closed_form(path: str, args: argparse.Namespace) -> list[Row]:
    model = GaussianMixtureModel(dim=DIM, region=REGION, separation=args.separation, path=path)
    x0 = model.sample(0, args.rows, seed=11)  # class A
    seeds = list(range(args.rows))
    schedule = Schedule.from_config(CONFIGS[path], args.steps)
    prompts = LatentEditor(model, progress=False).prompts
    cpu = torch.device("cpu")

    def source() -> Any:
        return prompts.guidance(["A"], "", [CLOSED_CFG[0]], args.rows)

    def target() -> Any:
        return prompts.guidance(["B"], "", [CLOSED_CFG[1]], args.rows)

    @contextmanager
    def counter() -> Iterator[tuple[CallCount, None]]:
        model.calls = model.rows = 0
        count = CallCount()
        yield count, None
        count.calls, count.rows = model.calls, model.rows

    rows = []
    for k in strengths(args):
        held: dict[str, float] = {}

        def ddpm() -> torch.Tensor:
            inv = ddpm_invert(source(), schedule, x0, k, 1.0, seeds, 16, False)
            held["inv"] = (inv.xts.numel() * inv.xts.element_size() + inv.zs.numel() * inv.zs.element_size()) / MIB
            return ddpm_edit(target(), schedule, inv.xts[:, 0], inv.zs, 1.0, inv.residual, progress=False)

        runs = {
            "ddpm-inversion": ddpm,
            "flowedit": lambda: flowedit(source(), target(), schedule, x0, k, 0, 1, seeds, progress=False),
            "sdedit": lambda: sdedit(target(), schedule, x0, k, 1.0, seeds, None, False),
        }
        for method in METHODS:
            row, out = measured(runs[method], counter, cpu, args.repeats)
            change = out - x0
            rows.append({
                "world": f"closed form, {path}", "method": method, "edit": f"{k}/{args.steps}", **row,
                "inv_mib": held.get("inv", 0.0) if method == "ddpm-inversion" else 0.0,
                "p_b": class_b_probability(model, out).mean().item(), "dist": change.norm(dim=1).mean().item(),
                "dist_kept": change[:, KEPT].norm(dim=1).mean().item(),
            })  # fmt: skip
    return rows


def strengths(args: argparse.Namespace) -> list[int]:
    """The edited steps of each ``--strengths`` fraction: between 1 and steps - 1 (FlowEdit refuses the
    pure-noise step on the flow path)."""
    return [min(args.steps - 1, max(1, round(float(f) * args.steps))) for f in args.strengths.split(",")]


# ---------------------------------------------------------------------------------------------- models


def sd_real(device: torch.device) -> Any:
    """Stable Diffusion 1.5's layout with random weights, as ``bench_gpu.py`` builds it."""
    from bench_gpu import sd_parts

    from image_core import ImageEditor
    from image_core.stable_diffusion.model import StableDiffusionModel
    from image_core.stable_diffusion.tiny import SD_SCHEDULER

    parts = sd_parts("real")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    modules = {k: parts[k].to(device, dtype) for k in ("text_encoder", "unet", "vae")}
    model = StableDiffusionModel("random-sd15-real", parts["tokenizer"], **modules, scheduler_config=SD_SCHEDULER)
    return ImageEditor(model, progress=False)


def load(name: str, args: argparse.Namespace) -> tuple[Any, Any, torch.nn.Module, tuple[str, str]]:
    """(editor, input, its network, (source, target) prompts)."""
    if name == "tiny-acestep":
        from audio_edit import Audio, AudioEditor

        editor = AudioEditor.from_pretrained("tiny-acestep", device=str(args.device), progress=False)
        rate = editor.model.sample_rate
        seconds = 10.0 if args.size == "real" else args.seconds
        t = np.arange(int(seconds * rate)) / rate
        wave = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 2 * t))
        return editor, Audio(np.stack([wave, wave]).astype(np.float32), rate), editor.model.transformer, PROMPTS[name]
    from PIL import Image

    if args.size == "real":
        editor = sd_real(args.device)
    else:
        from image_core import ImageEditor

        editor = ImageEditor.from_pretrained("tiny", device=str(args.device), progress=False)
    side = 512 if args.size == "real" else 64
    y, x = np.mgrid[0:side, 0:side] / side
    picture = Image.fromarray((255 * np.stack([x, y, (x + y) / 2], -1)).astype(np.uint8))
    return editor, picture, editor.model.unet, PROMPTS["sd"]


def model_rows(name: str, args: argparse.Namespace) -> list[Row]:
    editor, item, network, (src, tar) = load(name, args)
    n = args.steps
    k = min(n - 1, max(1, round(args.model_strength * n)))
    cfg_src, cfg_tar = MODEL_CFG
    held: dict[str, float] = {}

    def ddpm() -> Any:
        inv = editor.invert(item, src, n, k, cfg_src, 1.0, 0)
        held["inv"] = sum(t.numel() * t.element_size() for t in (inv.xts, inv.zs) if isinstance(t, torch.Tensor)) / MIB
        return editor.edit(inv, tar, cfg_tar, output_type="latent")

    runs = {
        "ddpm-inversion": ddpm,
        "flowedit": lambda: editor.flowedit(item, tar, src, n, k, 0, 1, cfg_src, cfg_tar, 0, output_type="latent"),
        "sdedit": lambda: editor.sdedit(item, tar, n, k, cfg_tar, seed=0, output_type="latent"),
    }

    @contextmanager
    def counter() -> Iterator[tuple[CallCount, CallCount]]:
        count, inner = CallCount(), editor.denoiser

        def counted(x: torch.Tensor, *rest: Any, **kwargs: Any) -> torch.Tensor:
            count.calls += 1
            count.rows += x.shape[0]
            return inner(x, *rest, **kwargs)

        editor.denoiser = editor.prompts.denoiser = counted
        try:
            with count_unet_calls(network, "hidden_states" if name == "tiny-acestep" else "sample") as net:
                yield count, net
        finally:
            editor.denoiser = editor.prompts.denoiser = inner

    label = {"tiny-acestep": "tiny-acestep, flow", "sd": "sd15 512x512, vp" if args.size == "real" else "tiny-sd, vp"}[name]
    rows = []
    for method in METHODS:
        row, _ = measured(runs[method], counter, args.device, args.repeats)
        rows.append({"world": label, "method": method, "edit": f"{k}/{n}", **row,
                     "inv_mib": held.get("inv", 0.0) if method == "ddpm-inversion" else 0.0})
    return rows


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--size", choices=["tiny", "real"], default="tiny", help="real: SD 1.5's layout at 512x512, a 10 s clip")
    p.add_argument("--steps", type=int, default=20, help="steps of the whole chain")
    p.add_argument("--separation", type=float, default=1.0, help="closed form: class means at +-separation x a unit-RMS direction")
    p.add_argument("--strengths", default="0.2,0.3,0.7", help="closed form: edited fractions of the chain (t_start = n_max)")
    p.add_argument("--model-strength", type=float, default=0.7, help="models: edited fraction of the chain")
    p.add_argument("--rows", type=int, default=16, help="closed form: inputs (one seed each)")
    p.add_argument("--paths", default="vp,flow", help="closed-form paths: vp, edm, flow, or none")
    p.add_argument("--models", default="tiny-acestep", help="tiny-acestep, sd (tiny, or SD 1.5's layout at --size real), or none")
    p.add_argument("--seconds", type=float, default=0.5, help="length of the tiny-acestep clip at --size tiny")
    p.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up (the median is shown)")
    args = p.parse_args(argv)
    args.device = torch.device(args.device)
    if args.steps < 2:
        p.error("--steps must be at least 2")
    return args


COLUMNS = [("world", "world"), ("method", "method"), ("edit", "steps edited"), ("calls", "calls"), ("rows", "rows"),
           ("net", "net fwd"), ("time_s", "time s"), ("best_s", "best s"), ("peak_mib", "peak MiB"), ("inv_mib", "inv MiB"),
           ("p_b", "p(B)"), ("dist", "dist"), ("dist_kept", "dist kept")]


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    set_threads(args.threads)
    torch.manual_seed(0)
    rows: list[Row] = []
    for path in [p for p in args.paths.split(",") if p and p != "none"]:
        rows += closed_form(path, args)
    for name in [m for m in args.models.split(",") if m and m != "none"]:
        rows += model_rows(name, args)
    print(f"device {args.device}, {torch.get_num_threads()} threads, --size {args.size}, {args.steps} steps; "
          f"guidance closed form {CLOSED_CFG[0]} / {CLOSED_CFG[1]}, models {MODEL_CFG[0]} / {MODEL_CFG[1]} (source / target)")
    print_table(rows, COLUMNS)
    if any(row.get("p_b") is not None for row in rows):
        model = GaussianMixtureModel(dim=DIM, region=REGION, separation=args.separation)
        x0 = model.sample(0, args.rows, seed=11)
        print(f"closed form: the inputs' p(B) {class_b_probability(model, x0).mean().item():.2g}; "
              f"|m_A - m_B| = {(model.means[0] - model.means[1]).norm().item():.3g}; a draw spreads "
              f"sqrt(sum var) = {model.var.sum().sqrt().item():.3g} around its mean "
              f"({model.var[KEPT].sum().sqrt().item():.3g} on the kept coordinates)")
    return rows


if __name__ == "__main__":
    main()
