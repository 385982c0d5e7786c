"""Cost of null-text inversion at its paper's settings, next to DDIM and edit-friendly DDPM inversion.

Null-text inversion (Mokady et al., CVPR 2023; ``image_core.methods.null_text``) at the paper's
settings: 50 steps, the whole chain (t_start 50), 10 Adam steps per step, guidance 7.5. Per model,
one input latent is inverted four ways with ``LatentEditor.invert_latent``, then edited once
(``edit_latent(inv, target, cfg)``) and reconstructed (``edit_latent(inv, source, cfg)``):

- null-text (early stop): ``method="null-text"`` with the paper's early stop (a step stops once its
  loss is below 1e-5 · (1 + 100 i / K)): the cost of the method as it runs by default;
- null-text (every step): the same with ``early_stop=0``: all 10 Adam steps of every step run,
  the worst case;
- DDIM (cfg 1): ``method="ddim"`` at guidance 1, null-text's pivot alone (the "DDIM inversion"
  baseline of the paper), reconstructed and edited at guidance ``--cfg``;
- DDPM: edit-friendly DDPM inversion (``method="ddpm"``, eta 1, source guidance ``--cfg``: the
  guided reconstruction is then exact), its x_t batched across timesteps.

Columns:
- inversion s, edit s: wall time of ``invert_latent`` and of the one edit (best of ``--repeats``);
- fwd calls / fwd rows: UNet forward calls during the inversion and the samples they evaluated
  (a batch of B rows counts B), counted with ``common.count_unet_calls``;
- bwd passes: backward passes through the UNet during the inversion. Counted by a forward hook
  that, on every UNet call made with gradients enabled, puts a gradient hook on the call's output
  tensor: that hook fires once per backward pass through the call. The count is cross-checked
  against ``NullTextInversion.backward_passes`` (the Adam steps the optimisation reports), captured
  by wrapping ``image_core.editing.null_text_invert`` for the run;
- Adam / step: bwd passes per sampler step (10 at most);
- recon err: ||rec - x0|| / ||x0|| of the guided reconstruction (source prompt at ``--cfg``);
- (inv + edit) / DDPM's: (inversion + edit) time over DDPM inversion's (inversion + edit) on the same model.

Models: "tiny" (the package's random-weight test SD), "mid" (the SD-like random-weight UNet of
``bench_image.py``, ``--channels`` / ``--size``), "audio" (the tiny random-weight AudioLDM2 on a
10 s synthetic clip, as ``bench_audio.py`` makes one), "audio-mid" (``bench_audio.py``'s wider
AudioLDM2-like UNet, ``--audio-channels``) and "tiny-audioldm" (the tiny AudioLDM, same clip). On
random weights the guided sampler at 7.5 drifts far from its input and the per-step losses stay
far above the early stop, so both null-text rows run every Adam step, and the reconstruction errors say little about trained models. Random weights
also amplify float32 rounding: DDPM inversion's x_t are evaluated in batches of up to
``--inversion-batch-size`` rows, its edits in batches of 2, and the rounding that differs between
them grows along 50 guided steps (``--inversion-batch-size 1 --window-batch 1`` makes it exact).
``--threads 1`` (the default) gives the steadiest timings on a shared machine.

    python benchmarks/bench_null_text.py                              # tiny, mid, audio at 50 / 10 / 7.5: about 10 minutes on one core
    python benchmarks/bench_null_text.py --models tiny --steps 4      # a smoke test, seconds
    python benchmarks/bench_null_text.py --models tiny,tiny-audioldm,audio --dtype bfloat16 --methods null-text-every,ddim,ddpm
    python benchmarks/bench_null_text.py --models audio-mid           # about 20 minutes on one core
    python benchmarks/bench_null_text.py --device cuda --models mid --size 64
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import torch

try:
    from . import bench_audio, bench_methods
    from .common import count_unet_calls, print_table, relative_error, timed
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import bench_audio
    import bench_methods
    from common import count_unet_calls, print_table, relative_error, timed

from audio_edit.models import AudioModel
from image_core import editing
from image_core.editing import LatentEditor, latent_dtype
from image_core.methods.null_text import EARLY_STOP

METHODS = {  # --methods name: (row label, invert_latent keywords; cfg_src is filled in where None)
    "null-text": ("null-text (early stop)", dict(method="null-text", cfg_src=None, early_stop=EARLY_STOP)),
    "null-text-every": ("null-text (every step)", dict(method="null-text", cfg_src=None, early_stop=0.0)),
    "ddim": ("DDIM (cfg 1)", dict(method="ddim", cfg_src=1.0)),
    "ddpm": ("DDPM", dict(method="ddpm", cfg_src=None, eta=1.0)),
}


@contextmanager
def count_unet_backward(module: torch.nn.Module) -> Iterator[list[int]]:
    """Count the backward passes through ``module``'s forward calls inside the ``with`` block: [n]."""
    count = [0]

    def on_grad(grad: torch.Tensor) -> None:
        count[0] += 1

    def hook(_module: torch.nn.Module, _args: Any, output: Any) -> None:
        sample = output if isinstance(output, torch.Tensor) else output[0]  # diffusers' output or tuple
        if sample.requires_grad:
            sample.register_hook(on_grad)

    handle = module.register_forward_hook(hook)
    try:
        yield count
    finally:
        handle.remove()


@contextmanager
def reported_backward_passes() -> Iterator[list[int]]:
    """[n]: the backward passes the null-text inversions inside the block report (their Adam steps)."""
    reported = [0]
    original = editing.null_text_invert

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        reported[0] += result.backward_passes
        return result

    with mock.patch.object(editing, "null_text_invert", wrapper):
        yield reported


AUDIO_KINDS = {"tiny-audioldm": "tiny AudioLDM", "audio-mid": "mid AudioLDM2"}  # kind: label, beyond load_subject's


def load(kind: str, args: argparse.Namespace) -> bench_methods.Subject:
    """A model, its editor and input latent (``bench_methods.load_subject``, plus ``AUDIO_KINDS``)."""
    if kind not in AUDIO_KINDS:
        return bench_methods.load_subject(kind, args)
    if kind == "tiny-audioldm":
        model = AudioModel.from_pretrained("tiny-audioldm", torch.device(args.device), getattr(torch, args.dtype))
    else:
        model = bench_audio.build_model("mid", argparse.Namespace(**{**vars(args), "channels": args.audio_channels}))
    editor = bench_audio.build_editor(model, args)
    x0 = editor.encode(bench_audio.synth_clip(bench_audio.COMPARE_SECONDS)).to(model.device, latent_dtype(model.device))
    shape = "x".join(str(n) for n in x0.shape[1:])
    label = f"{AUDIO_KINDS[kind]} ({shape} latent, {sum(p.numel() for p in model.unet.parameters()) / 1e6:.2f}M)"
    return bench_methods.Subject(label, model, editor, x0, "audio")


def run_model(kind: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    subject = load(kind, args)
    editor: LatentEditor = subject.editor
    unet, x0 = subject.model.unet, subject.x0
    source, target = (
        (args.source_prompt, args.target_prompt) if subject.domain == "image" else (args.audio_source_prompt, args.audio_target_prompt)
    )
    t_start = args.t_start or args.steps
    n = max(1, args.repeats)
    if args.warmup_steps > 0:  # kernels, allocator, lazy imports, the backward pass
        steps = min(args.warmup_steps, args.steps)
        inv = editor.invert_latent(x0, source, steps, steps, args.cfg, method="null-text", inner_steps=1, early_stop=0.0)
        editor.edit_latent(inv, target, args.cfg)
    rows = []
    for label, settings in (METHODS[name.strip()] for name in args.methods.split(",")):
        settings = {**settings, "cfg_src": args.cfg if settings["cfg_src"] is None else settings["cfg_src"]}
        if settings["method"] == "null-text":
            settings["inner_steps"] = args.inner_steps
        with count_unet_calls(unet) as fwd, count_unet_backward(unet) as bwd, reported_backward_passes() as reported:
            inv_s, inv = timed(lambda: editor.invert_latent(x0, source, args.steps, t_start, seed=args.seed, **settings), args.repeats)
        assert bwd[0] == reported[0], f"{label}: {bwd[0]} backward passes hooked, {reported[0]} reported"
        with count_unet_calls(unet) as edit_fwd:
            edit_s, _ = timed(lambda: editor.edit_latent(inv, target, args.cfg), args.repeats)
        recon = relative_error(editor.edit_latent(inv, source, args.cfg), inv.x0)
        rows.append({
            "model": subject.label, "method": label, "inv_s": inv_s, "fwd_calls": fwd.calls // n, "fwd_rows": fwd.rows // n,
            "bwd": bwd[0] // n, "adam_per_step": bwd[0] / n / t_start, "edit_s": edit_s,
            "edit_calls": f"{edit_fwd.calls // n} / {edit_fwd.rows // n}", "recon": recon, "total_s": inv_s + edit_s,
        })  # fmt: skip
    for row in rows:
        row["vs_ddpm"] = row["total_s"] / rows[-1]["total_s"] if rows[-1]["method"] == "DDPM" else float("nan")
    return rows


COLUMNS = [
    ("model", "model"),
    ("method", "method"),
    ("inv_s", "inversion s"),
    ("fwd_calls", "fwd calls"),
    ("fwd_rows", "fwd rows"),
    ("bwd", "bwd passes"),
    ("adam_per_step", "Adam / step"),
    ("edit_s", "edit s"),
    ("edit_calls", "edit calls / rows"),
    ("recon", "recon err"),
    ("vs_ddpm", "(inv + edit) / DDPM's"),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default="tiny,mid,audio", help="comma-separated: tiny, mid (SD), audio, audio-mid (AudioLDM2), tiny-audioldm (AudioLDM)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated rows, DDPM's last: {', '.join(METHODS)}")
    p.add_argument("--steps", type=int, default=50, help="steps of the chain")
    p.add_argument("--t-start", type=int, default=0, help="steps inverted and edited (0: all --steps)")
    p.add_argument("--inner-steps", type=int, default=10, help="null-text: Adam steps per step")
    p.add_argument("--cfg", type=float, default=7.5, help="guidance of the edit and the reconstruction (null-text's, DDPM's source)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="UNet dtype")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per measurement (the best is kept)")
    p.add_argument("--warmup-steps", type=int, default=2, help="steps of the warm-up null-text inversion and edit (0: none)")
    p.add_argument("--seed", type=int, default=0, help="DDPM inversion's noise")
    p.add_argument("--inversion-batch-size", type=int, default=16, help="(x_t, t) rows per DDPM inversion call")
    p.add_argument("--size", type=int, default=24, help="latent side of the SD mid model")
    p.add_argument("--channels", default="64,128,256", help="block_out_channels of the SD mid model")
    p.add_argument("--cross-dim", type=int, default=64, help="cross-attention / text width of the SD mid model")
    p.add_argument("--audio-channels", default="64,128,256", help="block_out_channels of the audio mid model")
    p.add_argument("--window-batch", type=int, default=8, help="window rows per UNet call of the audio editor")
    p.add_argument("--source-prompt", default="a photo")
    p.add_argument("--target-prompt", default="a painting")
    p.add_argument("--audio-source-prompt", default="a piano playing a melody")
    p.add_argument("--audio-target-prompt", default="an electric guitar playing a melody")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"steps {args.steps}, t_start {args.t_start or args.steps}, inner steps {args.inner_steps}, cfg {args.cfg}; "
        f"device {args.device}, {args.dtype}, threads {args.threads}, best of {args.repeats}\n",
        flush=True,
    )
    rows = [row for kind in args.models.split(",") if kind.strip() for row in run_model(kind.strip(), args)]
    print_table(rows, COLUMNS)
    print(
        "\nfwd / bwd: UNet forward calls, rows and backward passes of the inversion. Adam / step: bwd passes per step."
        "\nedit calls / rows: of the one edit. recon err: ||rec - x0|| / ||x0||, source prompt at the edit's guidance."
        "\n(inv + edit) / DDPM's: wall time of inversion and one edit over DDPM inversion's on the same model.",
        flush=True,
    )
    return rows


if __name__ == "__main__":
    main()
