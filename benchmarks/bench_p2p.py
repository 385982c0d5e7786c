"""Cost of Prompt-to-Prompt (attention control) against the plain edit of the same inversion.

For an audio clip (AudioLDM 2, a synthesised 10 s melody), a picture (Stable Diffusion, a 512 x 512
gradient, which the editor resizes to the model's native size) and the same clip with ACE-Step 1.5 (its
DiT; ``--only acestep``), each inverted once (``--steps`` / ``--t-start``, source guidance 3.5 for SD / 3
for audio, eta 1, seed 0; ACE-Step: its turbo defaults, 8 steps, the last 6 edited, guidance 1), then edited
towards 1 and towards 2 target prompts (one word swapped), the table shows per setting:

- plain s: ``editor.edit(inv, targets, output_type="latent")``;
- P2P s: ``editor.edit_p2p(inv, targets, mode="replace")`` (the inversion's default cross- / self-attention
  steps: 0.6 / 0.2 of the chain for DDPM);
- P2P+blend s: the same with a local blend on the swapped words and ``return_attention=True`` (the word
  maps kept over the whole edit); ratios: each P2P time over the plain one;
- UNet calls per edit and rows per call of the plain and the P2P edit (a forward pre-hook on
  ``editor.model.unet``): both make one call per step; P2P adds the source row (regenerating the
  inversion) to the batch, in its conditional and its unconditional half: 2 (T + 1) B rows against 2 T B;
- store bytes: the attention store of the P2P+blend edit, the running sum of the word maps that
  ``image_core.methods.p2p.AttentionControl.maps`` holds while the edit runs, (P, B, Q, K) float32:
  P · B · Q · K · 4 bytes, with P = T + 1 prompts, B latents, Q = h · w positions of the map grid and K
  text keys, read from the shape (P, h, w, K) of the returned maps. The plain edit and P2P without
  blend or maps keep no store.

Times: ``time.perf_counter``, the median of ``--repeats`` runs after one warm-up run of every variant (a
short inversion, the batch shapes of the timed runs); the inversion and the decoding (VAE, vocoder) are
not timed. The ratios are also given in CPU time of the process (``time.process_time``, all threads),
steadier than wall time on a shared machine.

Models, random weights (speed and memory only, never quality):

- ``--size tiny`` (default): the package's tiny AudioLDM 2 and SD ("tiny"), on the CPU in about
  3 minutes with 2 threads; the audio edits run ``--audio-t-start`` 5 of the 50 steps (P2P on the 10 s
  clip is the slow part; the cost per step, hence each ratio, does not depend on t_start);
- ``--size small`` / ``--size real``: AudioLDM2-music built from the configs in
  ``../shared/configs/audioldm2-music`` and SD 1.5 (512 x 512), at their real sizes or in the small
  layout (``bench_gpu.audio_parts`` / ``sd_parts``); real size is meant for a GPU (``--device cuda``).
  ACE-Step: the tiny model (``--size tiny``), or (``small`` / ``real``) the tiny model with a DiT of
  the real one's width (2048, 16 query / 8 key-value heads of 128, MLP 6144, sliding window 128) and 4
  of its 24 blocks, over the tiny model's 8 latent channels: attention and MLP costs per block as at
  real size (the tiny text encoder and tokenizer stay: the real ones cannot be built offline).

    python benchmarks/bench_p2p.py                                  # tiny models, CPU, 2 threads
    python benchmarks/bench_p2p.py --only image --repeats 5 --threads 1
    python benchmarks/bench_p2p.py --only acestep                   # P2P on ACE-Step's DiT
    python benchmarks/bench_p2p.py --size small --audio-t-start 10  # small real-layout UNets on a CPU
    python benchmarks/bench_p2p.py --size real --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_gpu  # noqa: E402
from bench_audio import SAMPLE_RATE, synth_clip  # noqa: E402
from common import count_unet_calls, print_table, synchronize  # noqa: E402

from audio_edit import Audio, AudioEditor  # noqa: E402
from audio_edit.models import AudioModel  # noqa: E402
from image_core import ImageEditor  # noqa: E402
from image_core.p2p import network  # noqa: E402
from image_core.stable_diffusion.model import StableDiffusionModel  # noqa: E402
from image_core.stable_diffusion.tiny import SD_SCHEDULER  # noqa: E402

CLIP_SECONDS = 10.0
PICTURE_SIDE = 512
# (source prompt, its swapped word, template of the targets, candidate words): the targets are the first
# candidates whose prompt has the source's token length (a replace swaps words between prompts of equal length)
AUDIO = ("a piano playing a melody", "piano", "a {} playing a melody", ("flute", "organ", "cello", "drums", "guitar"))
IMAGE = ("a photo of a cat sitting on a bench", "cat", "a photo of a {} sitting on a bench", ("dog", "fox", "cow", "owl"))
CFG = {"audio": (3.0, 12.0), "image": (3.5, 15.0), "acestep": (1.0, 1.0)}  # (source, target) guidance: the papers' / the turbo model's
DOMAINS = ("audio", "image", "acestep")

Row = dict[str, Any]


# --------------------------------------------------------------------------------------------- models


def audio_editor(args: argparse.Namespace) -> AudioEditor:
    if args.size == "tiny":
        return AudioEditor.from_pretrained("tiny", device=args.device, progress=False)
    # the real-size T5 vocabulary holds the whole words of the benchmark prompts: add the targets' words
    bench_gpu.AUDIO_PROMPTS = (*bench_gpu.AUDIO_PROMPTS, *(AUDIO[2].format(w) for w in AUDIO[3]))
    parts, scheduler = bench_gpu.audio_parts(args.size, args.configs)
    model = AudioModel("audioldm2", f"random-{args.size}", parts, scheduler, args.device, torch.float32)
    return AudioEditor(model, progress=False)


def image_editor(args: argparse.Namespace) -> ImageEditor:
    if args.size == "tiny":
        return ImageEditor.from_pretrained("tiny", device=args.device, progress=False)
    parts = bench_gpu.sd_parts(args.size)
    modules = {k: parts[k].to(args.device) for k in ("text_encoder", "unet", "vae")}
    model = StableDiffusionModel(f"random-sd15-{args.size}", parts["tokenizer"], **modules, scheduler_config=SD_SCHEDULER)
    return ImageEditor(model, progress=False)


def ace_step_editor(args: argparse.Namespace) -> Any:
    from audio_edit.ace_step import AceStepModel
    from audio_edit.ace_step_editor import AceStepEditor
    from audio_edit.tiny_ace_step import build_tiny_ace_step

    parts = build_tiny_ace_step()
    if args.size != "tiny":  # the real DiT's block, 4 of them, over the tiny latent
        from diffusers import AceStepTransformer1DModel

        tiny = parts["transformer"].config
        parts["transformer"] = AceStepTransformer1DModel(
            hidden_size=2048, intermediate_size=6144, num_hidden_layers=4, num_attention_heads=16, num_key_value_heads=8,
            head_dim=128, in_channels=tiny.in_channels, audio_acoustic_hidden_dim=tiny.audio_acoustic_hidden_dim,
            encoder_hidden_size=tiny.encoder_hidden_size, sliding_window=128, is_turbo=True,
        ).eval()  # fmt: skip
    return AceStepEditor(AceStepModel(parts, args.device), progress=False)


def audio_input() -> Audio:
    return Audio(synth_clip(CLIP_SECONDS)[None], SAMPLE_RATE)


def image_input() -> Any:
    from PIL import Image

    y, x = np.mgrid[0:PICTURE_SIDE, 0:PICTURE_SIDE] / PICTURE_SIDE
    return Image.fromarray((255 * np.stack([x, y, (x + y) / 2], -1)).astype(np.uint8))


def prompts_for(editor: Any, spec: tuple[str, str, str, Sequence[str]], count: int) -> tuple[str, list[str], str]:
    """(source, ``count`` targets, mode): targets of the source's token length and "replace", or, when the
    tokenizer has too few of them, the first candidates and "refine"."""
    source, _, template, words = spec
    stream = network(editor.model).words
    length = len(stream.ids(source))
    equal = [template.format(w) for w in words if len(stream.ids(template.format(w))) == length]
    if len(equal) >= count:
        return source, equal[:count], "replace"
    return source, [template.format(w) for w in words[:count]], "refine"


def swapped_words(spec: tuple[str, str, str, Sequence[str]], source: str, targets: Sequence[str]) -> tuple[str, ...]:
    """The local blend's words: the source's swapped word and each target's word in its place."""
    position = source.split().index(spec[1])
    return (spec[1], *(t.split()[position] for t in targets))


# ------------------------------------------------------------------------------------------ measuring


def run_timed(fn: Callable[[], Any], unet: torch.nn.Module, repeats: int) -> tuple[float, float, int, int, Any]:
    """(median wall seconds of ``repeats`` runs, median CPU seconds of this process (all threads), UNet calls
    per run, UNet rows per call, last result)."""
    seconds, cpu, result = [], [], None
    with count_unet_calls(unet) as count:
        for _ in range(repeats):
            synchronize()
            start, start_cpu = time.perf_counter(), time.process_time()
            result = fn()
            synchronize()
            seconds.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    calls = count.calls // repeats
    return statistics.median(seconds), statistics.median(cpu), calls, count.rows // max(1, count.calls), result


def variants(editor: Any, inv: Any, targets: list[str], mode: str, blend: tuple[str, ...], cfg: float) -> dict[str, Callable[[], Any]]:
    return {
        "plain": lambda: editor.edit(inv, targets, cfg_tar=cfg, output_type="latent"),
        "p2p": lambda: editor.edit_p2p(inv, targets, mode=mode, cfg_tar=cfg, output_type="latent"),
        "blend": lambda: editor.edit_p2p(inv, targets, mode=mode, blend=blend, cfg_tar=cfg, output_type="latent",
                                         return_attention=True),
    }


def measure_domain(domain: str, args: argparse.Namespace) -> list[Row]:
    started = time.perf_counter()
    editors = {"audio": audio_editor, "image": image_editor, "acestep": ace_step_editor}
    editor = editors[domain](args)
    item = image_input() if domain == "image" else audio_input()
    spec = IMAGE if domain == "image" else AUDIO
    steps, t_start = {"audio": (args.steps, args.audio_t_start or args.t_start), "image": (args.steps, args.t_start), "acestep": (8, 6)}[domain]
    cfg_src, cfg_tar = CFG[domain]
    unet = editor.model.transformer if domain == "acestep" else editor.model.unet
    source = spec[0]
    inv = editor.invert(item, source, num_steps=steps, t_start=t_start, cfg_src=cfg_src, seed=[0])
    short = editor.invert(item, source, num_steps=4, t_start=2, cfg_src=cfg_src, seed=[0])  # for the warm-up
    B = inv.num_latents
    shape = "x".join(str(s) for s in inv.x0.shape[1:])
    what = {"audio": f"audio {CLIP_SECONDS:.0f} s", "image": f"image {PICTURE_SIDE}x{PICTURE_SIDE}", "acestep": f"ACE-Step {CLIP_SECONDS:.0f} s"}[domain]
    params = sum(p.numel() for p in unet.parameters()) / 1e6
    print(f"{what}: {args.size} model ({type(unet).__name__} {params:.1f}M), latent {shape}, steps {steps}, t_start {t_start}, "
          f"cfg {cfg_src} / {cfg_tar}; inverted in {time.perf_counter() - started:.0f} s", flush=True)
    rows = []
    for count in args.targets:
        _, targets, mode = prompts_for(editor, spec, count)
        blend = swapped_words(spec, source, targets)
        for fn in variants(editor, short, targets, mode, blend, cfg_tar).values():  # warm-up: same batch shapes
            fn()
        row: Row = {"setting": f"{what}, {count} target{'s' if count > 1 else ''} ({mode})"}
        for name, fn in variants(editor, inv, targets, mode, blend, cfg_tar).items():
            seconds, cpu, calls, rows_per_call, result = run_timed(fn, unet, args.repeats)
            row[f"{name}_s"], row[f"{name}_cpu"], row[f"{name}_calls"], row[f"{name}_rows"] = seconds, cpu, calls, rows_per_call
            if name == "blend":
                P, h, w, K = result[1].maps.shape
                row["store"] = f"{P}·{B}·{h * w}·{K}·4 = {P * B * h * w * K * 4}"
        row["p2p_ratio"] = row["p2p_s"] / row["plain_s"]
        row["blend_ratio"] = row["blend_s"] / row["plain_s"]
        row["cpu_ratios"] = f"{row['p2p_cpu'] / row['plain_cpu']:.3g} / {row['blend_cpu'] / row['plain_cpu']:.3g}"
        row["calls"] = f"{row['plain_calls']} x {row['plain_rows']} / {row['p2p_calls']} x {row['p2p_rows']}"
        print(f"  [{time.perf_counter() - started:4.0f} s] {row['setting']}: {targets}; plain {row['plain_s']:.3g} s, "
              f"P2P {row['p2p_s']:.3g} s, P2P+blend {row['blend_s']:.3g} s", flush=True)
        rows.append(row)
    return rows


COLUMNS = [
    ("setting", "setting"),
    ("plain_s", "plain s"),
    ("p2p_s", "P2P s"),
    ("blend_s", "P2P+blend+maps s"),
    ("p2p_ratio", "P2P / plain"),
    ("blend_ratio", "P2P+blend / plain"),
    ("cpu_ratios", "CPU-time ratios P2P / P2P+blend"),
    ("calls", "network calls x rows: plain / P2P"),
    ("store", "store bytes P·B·Q·K·4"),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", choices=["tiny", "small", "real"], default="tiny", help="the models (see above)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (the median is kept)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--t-start", type=int, default=25)
    p.add_argument("--audio-t-start", type=int, default=5, help="t_start of the audio edits (0: --t-start); P2P on the "
                   "10 s clip costs most of the run, and the cost per step does not depend on t_start")
    p.add_argument("--targets", default="1,2", help="comma-separated numbers of target prompts")
    p.add_argument("--only", default="audio,image,acestep", help="comma-separated: audio, image, acestep")
    p.add_argument("--configs", type=Path, default=bench_gpu.CONFIGS, help="the audioldm2-music component configs")
    args = p.parse_args(argv)
    args.targets = [int(t) for t in args.targets.split(",")]
    args.only = [o.strip() for o in args.only.split(",")]
    if set(args.only) - set(DOMAINS):
        p.error(f"--only: unknown {sorted(set(args.only) - set(DOMAINS))}")
    if max(args.targets) > min(len(AUDIO[3]), len(IMAGE[3])) or min(args.targets) < 1:
        p.error(f"--targets: between 1 and {min(len(AUDIO[3]), len(IMAGE[3]))}")
    if args.size != "tiny" and "audio" in args.only and not (args.configs / "unet" / "config.json").is_file():
        p.error(f"no audioldm2-music configs in {args.configs}: give --configs")
    args.device = torch.device(args.device)
    return args


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    name = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"{name}; size {args.size}; median of {args.repeats} after one warm-up\n", flush=True)
    rows = [row for domain in args.only for row in measure_domain(domain, args)]
    print()
    print_table(rows, COLUMNS)
    print(
        "\ns: median wall time of one edit (latents out: no decoding). P2P / plain: time ratio. UNet calls x rows: "
        "calls per edit x rows per call; a P2P call carries the source row besides the T targets, in both guidance "
        "halves: 2 (T + 1) B rows against 2 T B. store bytes: the attention store kept while the P2P+blend edit "
        "runs (AttentionControl.maps, float32 (P, B, Q, K)): P prompts (T + 1), B latents, Q map positions (h · w), "
        "K text keys; none without blend or maps. CPU-time ratios: of the process CPU time (all threads), "
        "steadier than wall time on a shared machine."
        f"\n[total {time.perf_counter() - started:.0f} s]"
    )
    return rows


if __name__ == "__main__":
    main()
