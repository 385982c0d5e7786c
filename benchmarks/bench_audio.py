"""Cost of audio edits: this package's ``AudioEditor`` against a reference-style loop, and length scaling.

1. One edit of a 10 s clip at the audio paper's defaults: 200 steps, t_start 100, source guidance
   3 (with a source prompt), target guidance 12, eta 1, seed 0. Both methods draw the same x_t (same
   seed and order), so they compute the same edit; the table shows how many UNet calls and
   sample-evaluations (rows) each needs, and how long.

   - ours: ``AudioEditor.invert_latent`` (only the t_start steps the edit runs, independent x_t
     batched across timesteps, conditional and unconditional halves in one call, split into calls of
     at most ``--window-batch`` rows) then ``edit_latent`` (one call of batch 2 per step).
   - reference: a loop in the style of the official code: inversion of all the steps, one
     unconditional and one conditional UNet call of batch 1 per step, then the edit with separate
     calls as well; the prompts are encoded once per run, as the official code does.

   Models: "tiny" (the package's random-weight test AudioLDM2) and "mid" (the tiny model with a
   wider random-weight UNet of the same layout, ``--channels``). The clip's latent is one 10.24 s
   window; the VAE and vocoder are not timed (both methods share them).

2. Length scaling: the whole pipeline, ``AudioEditor.invert`` on a clip (resampling, mel, VAE
   encoder) then ``edit`` (sampling, VAE decoder, vocoder), with the tiny model on clips of
   ``--lengths`` seconds, at ``--length-steps`` / ``--length-t-start`` (fewer steps than the
   paper's 200 / 100, which on a CPU take long on 3 minutes of audio; the cost per step does not
   depend on the step count). Long clips run on overlapping windows, so time and memory should grow
   linearly with the number of windows. Peak memory is the growth over the run: on CUDA from
   ``torch.cuda.max_memory_allocated``, on the CPU the resident set size sampled by a background
   thread (torch's CPU allocations are invisible to tracemalloc).

The test clip is synthesised: a melody of harmonic notes at 16 kHz.

    python benchmarks/bench_audio.py                         # both tables, about 7 minutes on one core
    python benchmarks/bench_audio.py --models tiny --skip-lengths
    python benchmarks/bench_audio.py --models mid --channels 64,128,256 --threads 2 --repeats 3
    python benchmarks/bench_audio.py --skip-compare --lengths 10,60,180 --length-steps 200 --length-t-start 100
    python benchmarks/bench_audio.py --device cuda --channels 128,256,384,640
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import math
import os
import threading
from types import TracebackType
from typing import Any

import numpy as np
import torch

try:
    from .common import (COMPARISON_COLUMNS, COMPARISON_NOTES, compare_with_reference, count_unet_calls, edit_parser,
                        print_table, timed)
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from common import (COMPARISON_COLUMNS, COMPARISON_NOTES, compare_with_reference, count_unet_calls, edit_parser,
                        print_table, timed)

from audio_edit import Audio, AudioEditor
from audio_edit.models import FAMILIES, AudioModel
from image_core.batching import Cond
from image_core.windows import spans

try:
    import psutil
except ImportError:  # read /proc instead (Linux)
    psutil = None

SAMPLE_RATE = 16000
COMPARE_SECONDS = 10.0
MELODY_HZ = (261.63, 293.66, 329.63, 392.00, 440.00, 392.00, 329.63, 293.66)


def synth_clip(seconds: float, note_s: float = 0.5) -> np.ndarray:
    """(n,) float32 mono at 16 kHz: a melody of notes with 4 harmonics, 10 ms attack and exponential decay."""
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    note = (t // note_s).astype(np.int64)
    local = t - note * note_s
    phase = 2 * np.pi * np.asarray(MELODY_HZ)[note % len(MELODY_HZ)] * local
    wave = sum(np.sin(k * phase) / k for k in range(1, 5)) * np.minimum(local / 0.01, 1.0) * np.exp(-4.0 * local)
    return (0.5 * wave / np.abs(wave).max()).astype(np.float32)


# --------------------------------------------------------------------------------------- models


def mid_model(channels: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> AudioModel:
    """The tiny AudioLDM2 with a wider random-weight UNet of its layout: ``channels`` per level,
    attention (self, GPT-2 and T5 cross-attention, the tiny text encoders' widths) in the deepest level."""
    from diffusers import AudioLDM2UNet2DConditionModel

    tiny = AudioModel.from_pretrained("tiny", device, dtype)
    config = tiny.unet.config
    levels = len(channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = AudioLDM2UNet2DConditionModel(
            sample_size=config.sample_size,
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            down_block_types=("DownBlock2D",) * (levels - 1) + ("CrossAttnDownBlock2D",),
            up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1),
            block_out_channels=channels,
            layers_per_block=1,
            norm_num_groups=math.gcd(32, *channels),
            cross_attention_dim=(config.cross_attention_dim[-1],) * levels,
            attention_head_dim=config.attention_head_dim,
        )
    components = {name: getattr(tiny, name) for name in FAMILIES["audioldm2"].components}
    return AudioModel("audioldm2", "random-mid", {**components, "unet": unet}, tiny.scheduler_config, device, dtype)


def build_model(kind: str, args: argparse.Namespace) -> AudioModel:
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if kind == "tiny":
        return AudioModel.from_pretrained("tiny", device, dtype)
    if kind == "mid":
        return mid_model(tuple(int(c) for c in args.channels.split(",")), device, dtype)
    raise SystemExit(f"unknown model {kind!r}: use tiny or mid")


def build_editor(model: AudioModel, args: argparse.Namespace) -> AudioEditor:
    return AudioEditor(
        model, window_batch=args.window_batch, inversion_batch_size=args.inversion_batch_size, progress=False
    )


# ----------------------------------------------------------------------------------- comparison


class PromptEps:
    """The reference's model call: ``predict_eps`` on batch 1, each prompt encoded once."""

    def __init__(self, model: AudioModel) -> None:
        self.model = model
        self._conds: dict[str, Cond] = {}

    def __call__(self, x: torch.Tensor, t: torch.Tensor, prompt: str) -> torch.Tensor:
        if prompt not in self._conds:
            self._conds[prompt] = self.model.encode_prompts([prompt])
        return self.model.predict_eps(x, t.reshape(1), self._conds[prompt]).float()


def run_comparison(kind: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    model = build_model(kind, args)
    editor = build_editor(model, args)
    x0 = editor.encode(synth_clip(COMPARE_SECONDS))
    shape = "x".join(str(n) for n in x0.shape[1:])
    label = f"{kind} ({shape} latent, {sum(p.numel() for p in model.unet.parameters()) / 1e6:.2f}M)"
    make_eps = functools.partial(PromptEps, model)
    return compare_with_reference(editor, model.unet, x0, make_eps, args, label)


# ------------------------------------------------------------------------------- length scaling


def rss_bytes() -> int:
    """Resident set size of this process in bytes."""
    if psutil is not None:
        return int(psutil.Process().memory_info().rss)
    with open("/proc/self/statm", encoding="ascii") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release_memory() -> None:
    """Hand freed memory back to the system, so that it does not hide the next run's growth."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class PeakMemory:
    """Peak memory growth in bytes (``peak``) over a ``with`` block, on ``device``.

    CUDA: ``torch.cuda.max_memory_allocated`` above the allocation at entry. CPU: the largest
    resident set size seen by a thread sampling every ``interval`` seconds, above the one at entry.
    """

    def __init__(self, device: torch.device, interval: float = 0.002) -> None:
        self.device, self.interval = device, interval
        self.peak = 0
        self._baseline = self._max = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        release_memory()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device)
        else:
            self._baseline = self._max = rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._max = max(self._max, rss_bytes())

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self._thread is None:
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._baseline
            return
        self._stop.set()
        self._thread.join()
        self.peak = max(self._max, rss_bytes()) - self._baseline


def edit_clip(editor: AudioEditor, clip: Audio, steps: int, t_start: int, args: argparse.Namespace) -> np.ndarray:
    """The whole default pipeline on one clip: invert, edit, decode; the edited waveform."""
    inv = editor.invert(clip, args.source_prompt, steps, t_start, args.cfg_src, args.eta, args.seed)
    return editor.edit(inv, args.target_prompt, args.cfg_tar)[0]


def measure_length(editor: AudioEditor, seconds: float, args: argparse.Namespace) -> dict[str, Any]:
    """One row of the length table: the pipeline's counts, time and peak memory on a clip of ``seconds``."""
    wave = synth_clip(seconds)
    clip = Audio(wave[None], SAMPLE_RATE)
    model = editor.model
    frames = editor.latent_length(len(wave))
    with PeakMemory(model.device) as memory, count_unet_calls(model.unet) as count:
        wall, edited = timed(lambda: edit_clip(editor, clip, args.length_steps, args.length_t_start, args), args.repeats)
    assert edited.shape == wave.shape, (edited.shape, wave.shape)
    n = max(1, args.repeats)
    return {
        "audio_s": seconds,
        "frames": frames,
        "windows": len(spans(frames, model.latent_window, editor.overlap)),
        "calls": count.calls // n,
        "rows": count.rows // n,
        "wall_s": wall,
        "s_per_audio_s": wall / seconds,
        "peak_mib": memory.peak / 2**20,
    }


def run_lengths(args: argparse.Namespace) -> list[dict[str, Any]]:
    editor = build_editor(build_model("tiny", args), args)
    lengths = [float(s) for s in args.lengths.split(",")]
    if args.warmup_steps > 0:  # kernels, allocator, lazy imports
        edit_clip(editor, Audio(synth_clip(lengths[0])[None], SAMPLE_RATE), 2, 1, args)
    rows = [measure_length(editor, seconds, args) for seconds in lengths]
    for row in rows:
        row["time_ratio"] = row["wall_s"] / rows[0]["wall_s"]
        row["audio_ratio"] = row["audio_s"] / rows[0]["audio_s"]
    return rows


LENGTH_COLUMNS = [
    ("audio_s", "audio s"),
    ("frames", "latent frames"),
    ("windows", "windows"),
    ("calls", "UNet calls"),
    ("rows", "sample-evals"),
    ("wall_s", "wall s"),
    ("s_per_audio_s", "s / audio-s"),
    ("audio_ratio", "length ratio"),
    ("time_ratio", "time ratio"),
    ("peak_mib", "peak memory MiB"),
]


# ----------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = edit_parser(
        __doc__.split("\n\n")[0], steps=200, t_start=100, cfg_src=3.0, cfg_tar=12.0, warmup=10,
        source="a piano playing a melody", target="an electric guitar playing a melody",
    )
    p.add_argument("--models", default="tiny,mid", help="comma-separated: tiny, mid (comparison table)")
    p.add_argument("--channels", default="64,128,256", help="block_out_channels of the mid model's UNet")
    p.add_argument("--window-batch", type=int, default=8, help="window rows per UNet call of ours")
    p.add_argument("--lengths", default="10,60,180", help="clip lengths in seconds of the length table")
    p.add_argument("--length-steps", type=int, default=20, help="steps of the length table's edits")
    p.add_argument("--length-t-start", type=int, default=10, help="t_start of the length table's edits")
    p.add_argument("--skip-compare", action="store_true", help="no comparison table")
    p.add_argument("--skip-lengths", action="store_true", help="no length table")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"device {args.device}, {args.dtype}, threads {args.threads}, best of {args.repeats}; "
        f"cfg_src {args.cfg_src}, cfg_tar {args.cfg_tar}, eta {args.eta}, seed {args.seed}; "
        f"source {args.source_prompt!r}, target {args.target_prompt!r}; "
        f"inversion_batch_size {args.inversion_batch_size}, window_batch {args.window_batch}",
        flush=True,
    )
    tables: dict[str, list[dict[str, Any]]] = {}
    if not args.skip_compare:
        print(f"\n## Edit of a {COMPARE_SECONDS:.0f} s clip: steps {args.steps}, t_start {args.t_start}\n", flush=True)
        tables["compare"] = [row for kind in args.models.split(",") for row in run_comparison(kind.strip(), args)]
        print_table(tables["compare"], COMPARISON_COLUMNS)
        print("\n" + COMPARISON_NOTES)
    if not args.skip_lengths:
        print(
            f"\n## Length scaling, tiny model, whole pipeline (invert + edit + decode): "
            f"steps {args.length_steps}, t_start {args.length_t_start}\n",
            flush=True,
        )
        tables["lengths"] = run_lengths(args)
        print_table(tables["lengths"], LENGTH_COLUMNS)
        print(
            "\nwindows: 10.24 s UNet windows of the latent. length ratio, time ratio: against the first length."
            "\npeak memory: growth over the run (CPU: sampled resident set size; CUDA: max_memory_allocated)."
        )
    return tables


if __name__ == "__main__":
    main()
