"""Real-size speed and memory of the default edits, for a GPU (H100 / H200 class); runs on a CPU at reduced size.

What it measures, for each ``--dtypes`` x ``--compile`` (the UNet wrapped in ``torch.compile``):

- audio 10 s (AudioLDM2-music, 200 steps, t_start 100, cfg 3 / 12, ``audio_edit.defaults``) end to end with
  ``AudioEditor`` (``invert`` a clip, ``edit``, waveform out), split into inversion, edit (``output_type="latent"``)
  and decode (``editor.output``: VAE + vocoder), and the edit from a cached inversion (edit + decode);
- reference: the same edit by a loop in the style of the official AudioEditingCode on the same weights
  (``common.ReferenceLoop``: the whole chain inverted, one UNet call per step and per branch at batch 1,
  no batching of timesteps, the prompts encoded once per run; plus the same encode and decode); the
  speedup column of the end-to-end row is its time over ours;
- a ``--song-seconds`` song (default 180 s: 24 overlapping windows) end to end;
- image 512 x 512 (Stable Diffusion 1.5, 100 steps, t_start 64, cfg 3.5 / 15) end to end with ``ImageEditor``;
- one UNet call (``predict_eps``) at batch 1, 2 and 8 of each model;
- peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the timed runs, weights included; on a CPU the
  growth of the resident set over the run (the weights come on top).

Models, random weights (speed and memory only, never quality), float32 masters on the CPU, the UNet cast to
each dtype (AudioModel keeps its VAE, vocoder and text encoders in float32; SD runs all in the dtype):

- ``--size real``: AudioLDM2-music built from the configs in ``../shared/configs/audioldm2-music`` (UNet 347M,
  block_out_channels (128, 256, 384, 640); VAE 55M; HiFi-GAN vocoder 55M; CLAP 194M; Flan-T5-large encoder
  341M; GPT-2 124M; projection 1.2M; 1.12 B in all). Tokenizers are generated locally at the configured
  sizes: a byte-level RoBERTa vocabulary of 50265 entries without merges (CLAP pads to 512 tokens anyway)
  and a sentencepiece-free unigram T5 vocabulary of 32000 pieces + 100 extra ids, whose whole words of the
  benchmark prompts give Flan-T5 sequences of realistic length (6 to 7 tokens). SD 1.5: UNet 860M
  (block_out_channels (320, 640, 1280, 1280), layers_per_block 2, cross_attention_dim 768,
  attention_head_dim 8, sample_size 64), VAE 84M (block_out_channels (128, 256, 512, 512)), CLIP text
  encoder 123M (12 layers, hidden 768, vocabulary 49408) with the tiny byte-level CLIP tokenizer (77 tokens).
- ``--size small``: the same layouts with far fewer channels, layers and heads (UNets (32, 64, 64, 64), one
  layer per block, one attention head; 2-layer text models of width 64; a 256 x 256 image), for a CPU smoke run.

    python benchmarks/bench_gpu.py                     # GPU: real size, float32/16/bf16 x compile off/on (long)
    python benchmarks/bench_gpu.py --dtypes float16,bfloat16 --compile off --budget-s 420
    python benchmarks/bench_gpu.py --dtypes float16 --compile on --compile-mode default --only audio,image --budget-s 420
    python benchmarks/bench_gpu.py --size small --dtypes float32 --compile off   # CPU smoke run (a few minutes)

On a GPU budget: the reference loop and the song are timed once (they are long); "warm-up s" is one run before
the timed ones, at a few steps but with the batch shapes of the full run, compilation included
(``max-autotune-no-cudagraphs`` autotunes for minutes, ``--compile-mode default`` compiles fastest);
``--budget-s`` skips what starts after that many seconds (a compile in progress is not cut short); every row is
printed as it is measured, so a run cut short still reports. The figures, and the goals printed under the
table, have to be measured on a GPU at real size: a CPU run only shows that the benchmark works.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_audio import PeakMemory, release_memory, synth_clip  # noqa: E402
from common import ReferenceLoop, count_unet_calls, print_table, synchronize  # noqa: E402

from audio_edit import Audio, AudioEditor, defaults  # noqa: E402
from audio_edit.models import AudioModel  # noqa: E402
from image_core import ImageEditor, batching  # noqa: E402
from image_core.adapters import first_line  # noqa: E402
from image_core.stable_diffusion.model import StableDiffusionModel  # noqa: E402
from image_core.stable_diffusion.tiny import SD_SCHEDULER, clip_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = next((p for p in (ROOT.parent / "shared", ROOT / "shared") if p.is_dir()), ROOT.parent / "shared") / "configs/audioldm2-music"
AUDIO_PROMPTS = ("a piano playing a melody", "an electric guitar playing a melody")
IMAGE_PROMPTS = ("a photo of a cat sitting on a bench", "a photo of a dog sitting on a bench")
IMAGE_STEPS, IMAGE_T_START, IMAGE_CFG = 100, 64, (3.5, 15.0)
CLIP_SECONDS, SAMPLE_RATE = 10.0, 16000
GOALS = (  # (row kind, column, limit, "<" or ">=", text) on an H100/H200-class GPU at real size
    ("audio-e2e", "time_s", 1.5, "<", "default 10 s audio edit end to end < 1.5 s"),
    ("audio-cached", "time_s", 1.0, "<", "from a cached inversion < 1 s"),
    ("audio-e2e", "speedup", 5.0, ">=", ">= 5x the reference loop"),
    ("song", "time_s", 30.0, "<", "a 3-minute song < 30 s"),
    ("audio-e2e,song,image", "peak_gib", 8.0, "<", "peak memory < 8 GiB"),
    ("image", "time_s", 2.0, "<", "512x512 image edit < 2 s"),
)
SMALL_AUDIO: dict[str, dict[str, Any]] = {  # overrides of the real configs for --size small
    "unet": {"block_out_channels": [32, 64, 64, 64], "layers_per_block": 1, "attention_head_dim": 1,
             "cross_attention_dim": [[None, 64, 64]] * 4},
    "vae": {"block_out_channels": [32, 64, 64], "layers_per_block": 1},
    "vocoder": {"upsample_initial_channel": 64},
    "text_encoder": {"projection_dim": 32, "projection_hidden_size": 64,
        "text_config": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
                        "projection_dim": 32, "projection_hidden_size": 64, "fusion_hidden_size": 64},
        "audio_config": {"depths": [1, 1, 1, 1], "num_attention_heads": [2, 2, 2, 2], "patch_embeds_hidden_size": 16,
                         "hidden_size": 128, "projection_dim": 32, "projection_hidden_size": 64}},
    "text_encoder_2": {"d_model": 64, "d_kv": 32, "d_ff": 128, "num_layers": 2, "num_heads": 2},
    "language_model": {"n_embd": 64, "n_layer": 2, "n_head": 2},
    "projection_model": {"text_encoder_dim": 32, "text_encoder_1_dim": 64, "langauge_model_dim": 64},
}
SD15 = {"unet": (320, 640, 1280, 1280), "layers": 2, "heads": 8, "cross": 768, "latent": 64, "vae": (128, 256, 512, 512), "text_layers": 12}
SD_SMALL = {"unet": (32, 64, 64, 64), "layers": 1, "heads": 1, "cross": 64, "latent": 32, "vae": (32, 32, 64, 64), "text_layers": 2}

Row = dict[str, Any]


# ------------------------------------------------------------------------------------------ models


def merged(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(config)
    for key, value in overrides.items():
        out[key] = merged(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def roberta_tokenizer(size: int, max_length: int) -> Any:
    """Byte-level BPE of ``size`` entries without merges (one token per byte), as the tiny model's."""
    from tokenizers import pre_tokenizers
    from transformers import RobertaTokenizer

    symbols = ["<s>", "<pad>", "</s>", "<unk>", *sorted(pre_tokenizers.ByteLevel.alphabet())]
    symbols += [f"\u0120filler{i}" for i in range(size - len(symbols) - 1)] + ["<mask>"]
    return RobertaTokenizer(vocab={s: i for i, s in enumerate(symbols)}, merges=[], model_max_length=max_length)


def t5_tokenizer(pieces: int, extra_ids: int, max_length: int) -> Any:
    """Unigram vocabulary (no sentencepiece model): the prompts' words, single characters, fillers."""
    from transformers import T5Tokenizer

    vocab = {"<pad>": 0.0, "</s>": 0.0, "<unk>": 0.0, "\u2581": -2.0}
    vocab.update({"\u2581" + w: -1.0 for p in AUDIO_PROMPTS + IMAGE_PROMPTS for w in p.split()})
    for c in string.ascii_letters + string.digits + string.punctuation:
        vocab.setdefault(c, -3.0)
        vocab.setdefault("\u2581" + c, -3.0)
    vocab.update({f"\u2581filler{i}": -20.0 for i in range(pieces - len(vocab))})
    return T5Tokenizer(vocab=list(vocab.items()), extra_ids=extra_ids, model_max_length=max_length)


def audio_parts(size: str, folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(float32 CPU components of AudioLDM2-music at ``size`` from the configs in ``folder``, scheduler config)."""
    from diffusers import AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel, AutoencoderKL
    from transformers import (ClapConfig, ClapFeatureExtractor, ClapModel, GPT2Config, GPT2Model, SpeechT5HifiGan,
                              SpeechT5HifiGanConfig, T5Config, T5EncoderModel)

    def config(name: str, file: str = "config.json") -> dict[str, Any]:
        loaded = json.loads((folder / name / file).read_text())
        return merged(loaded, SMALL_AUDIO.get(name, {})) if size == "small" else loaded

    parts: dict[str, Any] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for name, cls in (("unet", AudioLDM2UNet2DConditionModel), ("vae", AutoencoderKL), ("projection_model", AudioLDM2ProjectionModel)):
            parts[name] = cls.from_config(config(name))
        for name, model_cls, config_cls in (("text_encoder", ClapModel, ClapConfig), ("text_encoder_2", T5EncoderModel, T5Config),
                                            ("language_model", GPT2Model, GPT2Config),
                                            ("vocoder", SpeechT5HifiGan, SpeechT5HifiGanConfig)):
            parts[name] = model_cls(config_cls.from_dict(config(name)))
    t5 = config("tokenizer_2", "tokenizer_config.json")
    parts["tokenizer"] = roberta_tokenizer(parts["text_encoder"].config.text_config.vocab_size,
                                           config("tokenizer", "tokenizer_config.json")["model_max_length"])
    parts["tokenizer_2"] = t5_tokenizer(32000, t5["extra_ids"], t5["model_max_length"])  # 32100 entries, as Flan-T5's
    parts["feature_extractor"] = ClapFeatureExtractor(**config("feature_extractor", "preprocessor_config.json"))
    return parts, config("scheduler", "scheduler_config.json")


def sd_parts(size: str) -> dict[str, Any]:
    """Float32 CPU components of Stable Diffusion 1.5 (``SD15``) or its small layout."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    s = SD15 if size == "real" else SD_SMALL
    tokenizer = clip_tokenizer()
    width = s["cross"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=s["text_layers"],
            num_attention_heads=max(1, width // 64), max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
        unet = UNet2DConditionModel(
            sample_size=s["latent"], in_channels=4, out_channels=4, block_out_channels=s["unet"], layers_per_block=s["layers"],
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=width, attention_head_dim=s["heads"])
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=s["vae"], layers_per_block=s["layers"],
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            sample_size=8 * s["latent"], scaling_factor=0.18215)
    return {"tokenizer": tokenizer, "text_encoder": text_encoder, "unet": unet, "vae": vae}


def compile_unet(unet: torch.nn.Module, args: argparse.Namespace) -> torch.nn.Module:
    if args.device.type == "cuda":
        return torch.compile(unet, mode=args.compile_mode)  # type: ignore[return-value]
    return torch.compile(unet)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------- measuring


def timed_call(fn: Callable[[], Any]) -> tuple[float, Any]:
    synchronize()  # torch.cuda.synchronize() when CUDA is in use
    start, result = time.perf_counter(), fn()
    synchronize()
    return time.perf_counter() - start, result


def measure(fn: Callable[[], Any], unet: torch.nn.Module, args: argparse.Namespace, repeats: int,
            warmup: Callable[[], Any] | None = None, per: int = 1) -> tuple[Row, Any]:
    """Row fields (first_s: the warm-up call; time_s: best of ``repeats`` / ``per``; UNet calls and rows per
    run; peak_gib) and the result of the last run."""
    row: Row = {} if warmup is None else {"first_s": timed_call(warmup)[0]}
    best, result, cuda = math.inf, None, args.device.type == "cuda"
    with PeakMemory(args.device) as memory, count_unet_calls(unet) as count:
        for _ in range(repeats):
            seconds, result = timed_call(fn)
            best = min(best, seconds)
    peak = torch.cuda.max_memory_allocated(args.device) if cuda else memory.peak  # PeakMemory reset the CUDA peak
    row.update(time_s=best / per, calls=count.calls // (repeats * per), rows=count.rows // (repeats * per), peak_gib=peak / 2**30)
    return row, result


def attempt(rows: list[Row], base: Row, label: str, run: Callable[[], tuple[Row, Any]], args: argparse.Namespace,
            kind: str = "") -> Any:
    """Append the row of ``run`` (or a row saying why there is none) and return its result (None on failure).
    A failure with compile on skips the rest of that configuration."""
    row: Row = {**base, "what": label, "kind": kind}
    if base.get("skip"):
        row["note"] = base["skip"]
    elif args.budget_s and time.perf_counter() - args.started > args.budget_s:
        row["note"] = f"skipped: over --budget-s {args.budget_s:.0f}"
    else:
        try:
            fields, result = run()
            rows.append({**row, **fields})
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in fields.items()}
            print(f"[{time.perf_counter() - args.started:6.0f} s] {label} ({base['dtype']}, compile {base['compile']}): {shown}", flush=True)
            return result
        except Exception as error:  # a compile failure, out of memory, a diverged edit: reported in the row
            row["note"] = first_line(error)[:120]
            release_memory()
            if base["compile"] == "on":
                base["skip"] = "skipped: compile run failed above"
    rows.append(row)
    print(f"[{time.perf_counter() - args.started:6.0f} s] {label} ({base['dtype']}, compile {base['compile']}): {row['note']}", flush=True)
    return None


def reference_eps(model: AudioModel) -> Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor]:
    """One UNet call of batch 1; each prompt encoded once per run (as the official code)."""
    conds: dict[str, Any] = {}

    def eps(x: torch.Tensor, t: torch.Tensor, prompt: str) -> torch.Tensor:
        if prompt not in conds:
            conds[prompt] = model.encode_prompts([prompt])
        return model.predict_eps(x, t.reshape(1), conds[prompt]).float().clone()

    return eps


def reference_edit(editor: AudioEditor, wave: np.ndarray, steps: int, t_start: int) -> np.ndarray:
    loop = ReferenceLoop(editor.model.scheduler_config, steps, reference_eps(editor.model))
    xts, zs = loop.invert(editor.encode(wave), AUDIO_PROMPTS[0], defaults.CFG_SRC, 1.0, 0)
    return editor.decode(loop.edit(xts, zs, t_start, AUDIO_PROMPTS[1], defaults.CFG_TAR, 1.0))


def unet_rows(rows: list[Row], base: Row, name: str, model: Any, shape: tuple[int, ...], prompt: str,
              args: argparse.Namespace) -> None:
    cond = model.encode_prompts([prompt])
    per = 10 if args.device.type == "cuda" else 1
    for batch in (1, 2, 8):
        x = torch.randn(batch, *shape, device=args.device)
        t = torch.full((batch,), 500, device=args.device)
        c = batching.take(cond, torch.zeros(batch, dtype=torch.long))

        def calls(n: int = per) -> None:
            with torch.no_grad():
                for _ in range(n):
                    model.predict_eps(x, t, c)

        attempt(rows, base, f"{name} UNet call, batch {batch} (s per call)",
                lambda: measure(calls, model.unet, args, args.repeats, lambda: calls(1), per), args)


# ------------------------------------------------------------------------------------------- groups


def audio_group(parts: dict[str, Any], scheduler: dict[str, Any], base: Row, only: set[str], args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    src, tar = AUDIO_PROMPTS
    steps, t_start, cfg_src, cfg_tar = defaults.NUM_STEPS, defaults.T_START, defaults.CFG_SRC, defaults.CFG_TAR
    model = AudioModel("audioldm2", f"random-{args.size}", {**parts, "unet": copy.deepcopy(parts["unet"])},
                       scheduler, args.device, base["torch_dtype"])
    model.fingerprint()  # of the plain UNet, before any compile
    if base["compile"] == "on":
        model.compiled_unet = compile_unet(model.unet, args)  # what --compile does
    editor = AudioEditor(model, progress=False)
    wave = synth_clip(CLIP_SECONDS)
    clip = Audio(wave[None], SAMPLE_RATE)
    label = f"audio {CLIP_SECONDS:.0f} s"

    def invert(item: Any = clip, n: int = steps, k: int = t_start) -> Any:
        return editor.invert(item, src, n, k, cfg_src, 1.0, 0)

    def whole(item: Any = clip, n: int = steps, k: int = t_start) -> Any:
        return editor.edit(invert(item, n, k), tar, cfg_tar)

    inv = None
    if "audio" in only:
        e2e = attempt(rows, base, f"{label}: end to end (invert + edit + decode)",
                      lambda: measure(whole, model.unet, args, args.repeats, lambda: whole(clip, 8, 4)), args, "audio-e2e")
        inv = attempt(rows, base, f"{label}: inversion", lambda: measure(invert, model.unet, args, args.repeats), args)
        if e2e is not None and inv is not None:
            latents = attempt(rows, base, f"{label}: edit (latent)", lambda: measure(
                lambda: editor.edit(inv, tar, cfg_tar, output_type="latent"), model.unet, args, args.repeats), args)
            if latents is not None:
                attempt(rows, base, f"{label}: decode (VAE + vocoder)", lambda: measure(
                    lambda: editor.output(latents, inv.meta), model.unet, args, args.repeats), args)
            attempt(rows, base, f"{label}: from cached inversion (edit + decode)", lambda: measure(
                lambda: editor.edit(inv, tar, cfg_tar), model.unet, args, args.repeats), args, "audio-cached")
    if "reference" in only:
        ref = attempt(rows, base, f"{label}: reference loop (batch 1 per branch and step)", lambda: measure(
            lambda: reference_edit(editor, wave, steps, t_start), model.unet, args, 1,
            lambda: reference_edit(editor, wave, 4, 2)), args, "reference")
        ours = [r for r in rows if r["kind"] == "audio-e2e" and "time_s" in r]
        if ref is not None and ours:
            ours[0]["speedup"] = rows[-1]["time_s"] / ours[0]["time_s"]
    if "song" in only:
        song = Audio(synth_clip(args.song_seconds)[None], SAMPLE_RATE)
        attempt(rows, base, f"audio {args.song_seconds:.0f} s song: end to end", lambda: measure(
            lambda: whole(song), model.unet, args, 1, lambda: whole(song, 4, 2)), args, "song")
    if "unet" in only:
        unet_rows(rows, base, "audio", model, (model.latent_channels, model.latent_window, model.mel_bins // model.vae_factor), src, args)
    del model, editor, inv
    return rows


def image_group(parts: dict[str, Any], base: Row, only: set[str], args: argparse.Namespace) -> list[Row]:
    from PIL import Image

    rows: list[Row] = []
    modules = {k: copy.deepcopy(parts[k]).to(args.device, base["torch_dtype"]) for k in ("text_encoder", "unet", "vae")}
    model = StableDiffusionModel(f"random-sd15-{args.size}", parts["tokenizer"], **modules, scheduler_config=SD_SCHEDULER)
    if base["compile"] == "on":
        model.compiled_unet = compile_unet(model.unet, args)  # what --compile does
    editor = ImageEditor(model, progress=False)
    side = model.native_size
    y, x = np.mgrid[0:side, 0:side] / side
    picture = Image.fromarray((255 * np.stack([x, y, (x + y) / 2], -1)).astype(np.uint8))
    src, tar = IMAGE_PROMPTS

    def whole(n: int = IMAGE_STEPS, k: int = IMAGE_T_START) -> Any:
        inv = editor.invert(picture, src, n, k, IMAGE_CFG[0], 1.0, 0)
        return editor.edit(inv, tar, IMAGE_CFG[1])

    if "image" in only:
        attempt(rows, base, f"image {side}x{side}: end to end (invert + edit + decode)",
                lambda: measure(whole, model.unet, args, args.repeats, lambda: whole(32, 16)), args, "image")
    if "unet" in only:
        unet_rows(rows, base, "SD", model, (4, side // 8, side // 8), src, args)
    del model, editor, modules
    return rows


# --------------------------------------------------------------------------------------------- main


def goal_lines(rows: list[Row], judged: bool) -> list[str]:
    lines = []
    for kind, key, limit, sign, text in GOALS:
        found = [r for r in rows if r["kind"] in kind.split(",") and isinstance(r.get(key), float)]
        cells = []
        for r in found:
            ok = r[key] < limit if sign == "<" else r[key] >= limit
            where = f"{r['what'].split(':')[0]}, " if "," in kind else ""
            cells.append(f"{where}{r['dtype']}/compile {r['compile']}: {r[key]:.3g} {('PASS' if ok else 'FAIL') if judged else 'not judged'}")
        lines.append(f"- {text}: " + ("; ".join(cells) or "not measured"))
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--size", choices=["real", "small"], default=None, help="default: real on CUDA, small on a CPU")
    p.add_argument("--dtypes", default=None, help="comma-separated; default float32,float16,bfloat16 on CUDA, float32 on a CPU")
    p.add_argument("--compile", default=None, help="off, on or off,on; default off,on on CUDA, off on a CPU")
    p.add_argument("--compile-mode", default="max-autotune-no-cudagraphs",
                   choices=["max-autotune-no-cudagraphs", "reduce-overhead", "default"], help="torch.compile mode on CUDA")
    p.add_argument("--only", default=None, help="comma-separated of audio,reference,song,image,unet; default all but song at small size")
    p.add_argument("--song-seconds", type=float, default=180.0)
    p.add_argument("--configs", type=Path, default=CONFIGS, help="the audioldm2-music component configs")
    p.add_argument("--repeats", type=int, default=None, help="timed runs (best kept); default 3 on CUDA, 1 on a CPU")
    p.add_argument("--budget-s", type=float, default=0.0, help="skip what starts after this many seconds (0: never)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads; default all cores on CUDA, 1 on "
                   "a CPU (steady timings on a shared machine)")
    args = p.parse_args(argv)
    args.device = torch.device(args.device)
    gpu = args.device.type == "cuda"
    args.size = args.size or ("real" if gpu else "small")
    args.dtypes = [d.strip() for d in (args.dtypes or ("float32,float16,bfloat16" if gpu else "float32")).split(",")]
    args.compile = [c.strip() for c in (args.compile or ("off,on" if gpu else "off")).split(",")]
    default_only = "audio,reference,image,unet" if args.size == "small" else "audio,reference,song,image,unet"
    args.only = {o.strip() for o in (args.only or default_only).split(",")}
    if args.only - {"audio", "reference", "song", "image", "unet"}:
        p.error(f"--only: unknown {sorted(args.only - {'audio', 'reference', 'song', 'image', 'unet'})}")
    if args.only & {"audio", "reference", "song", "unet"} and not (args.configs / "unet" / "config.json").is_file():
        p.error(f"no audioldm2-music configs in {args.configs}: give --configs")
    args.repeats = args.repeats or (3 if gpu else 1)
    args.threads = args.threads or ((os.cpu_count() or 1) if gpu else 1)
    return args


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    args.started = time.perf_counter()
    torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else f"CPU, {args.threads} threads"
    need_audio = bool(args.only & {"audio", "reference", "song", "unet"})
    need_image = bool(args.only & {"image", "unet"})
    audio, scheduler = audio_parts(args.size, args.configs) if need_audio else ({}, {})
    image = sd_parts(args.size) if need_image else {}
    sizes = ", ".join(f"{k} {sum(p.numel() for p in m.parameters()) / 1e6:.1f}M" for k, m in
                      [*audio.items(), *(("SD " + k, m) for k, m in image.items())] if isinstance(m, torch.nn.Module))
    print(f"{name}; size {args.size} ({sizes}); dtypes {args.dtypes}, compile {args.compile} "
          f"({args.compile_mode if args.device.type == 'cuda' else 'default'}), best of {args.repeats}; "
          f"built in {time.perf_counter() - args.started:.0f} s", flush=True)
    rows: list[Row] = []
    for dtype in args.dtypes:
        for compiled in args.compile:
            base: Row = {"dtype": dtype, "compile": compiled, "torch_dtype": getattr(torch, dtype)}
            if need_audio:
                rows += audio_group(audio, scheduler, base, args.only, args)
            base.pop("skip", None)
            if need_image:
                rows += image_group(image, base, args.only, args)
    print()
    print_table(rows, [("what", "row"), ("dtype", "dtype"), ("compile", "compile"), ("calls", "UNet calls"),
                       ("rows", "sample-evals"), ("first_s", "warm-up s"), ("time_s", "s"), ("peak_gib", "peak GiB"),
                       ("speedup", "speedup vs reference"), ("note", "note")])
    memory = "CUDA max_memory_allocated over the timed runs, weights included" if args.device.type == "cuda" \
        else "growth of the resident set over the timed runs (weights not included)"
    print(f"\ns: best of {args.repeats} (the reference and the song: one run); UNet rows: per call. warm-up s: one run "
          "before the timed ones with their batch shapes, compile included (audio 8 steps / t_start 4, reference and "
          f"song 4 / 2, image 32 / 16; a UNet row: one call). peak GiB: {memory}.")
    judged = args.device.type == "cuda" and args.size == "real"
    print(f"\nGoals (H100/H200-class GPU, real size; measured on {name}):" if judged else
          "\nGoals (for an H100/H200-class GPU at real size: these figures are NOT comparable, not judged):")
    print("\n".join(goal_lines(rows, judged)))
    return rows


if __name__ == "__main__":
    main()
