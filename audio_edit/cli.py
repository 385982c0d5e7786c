"""``audio-edit``: edit a recording with text prompts from the command line."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

from image_core import cli_common

from . import defaults


def _main(argv: Sequence[str]) -> None:
    parser = cli_common.edit_parser(
        "audio-edit",
        "Edit a recording with text by edit-friendly DDPM inversion (AudioLDM / AudioLDM2). "
        "The edit is mono, at the input's sample rate, length and loudness.",
        model=defaults.MODEL,
        steps=defaults.NUM_STEPS,
        t_start=defaults.T_START,
        cfg_src=defaults.CFG_SRC,
        cfg_tar=defaults.CFG_TAR,
    )
    parser.add_argument("--spectrogram", action="store_true", help="also write a PNG of the input's and the edits' spectrograms")
    args = cli_common.parse_arguments(parser, argv)
    cli_common.set_threads(args.threads)
    from .audio_io import check_output, load_audio

    clip = load_audio(args.input)  # a bad input fails before the model loads
    loaded = cli_common.load_inversion(args.inversion) if args.inversion else None
    if loaded is not None:
        facts = {"sample_rate": clip.sample_rate, "num_frames": clip.num_frames}
        cli_common.check_inversion_fits(loaded, facts, "sample rate and length", args.inversion)
    seeds = list(loaded.settings.seeds) if loaded else list(range(args.seed, args.seed + args.num_outputs))
    paths = cli_common.output_paths(args.input, args.out, args.target, seeds, ".wav")
    picture = paths[0].with_name(f"{paths[0].stem}_spectrogram.png") if args.spectrogram else None
    record = cli_common.record_path(paths[0])
    saved = cli_common.inversion_output(args.save_inversion)
    outputs = [*paths, *([picture] if picture else []), record, *([saved] if saved else [])]
    cli_common.check_outputs(outputs, [args.input, *([args.inversion] if args.inversion else [])], args.overwrite)
    for path in paths:
        check_output(path, 1, clip.sample_rate)

    from .editor import AudioEditor

    editor = AudioEditor.from_pretrained(args.model, device=args.device, dtype=args.dtype, **cli_common.editor_options(args))
    inv = loaded or editor.invert(clip, args.source, args.steps, args.tstart, args.cfg_src, args.eta, seeds)
    clips = editor.edit(inv, args.target, args.cfg_tar, args.negative)
    extra = {"spectrogram": picture} if picture else {}
    facts = cli_common.run_record("audio-edit", args, editor, inv.settings, paths, extra)
    jobs: list[tuple[Path, cli_common.Writer]] = [
        (path, partial(_write_wave, wave, clip.sample_rate)) for path, wave in zip(paths, clips)
    ]
    if picture:
        labelled = [("input", clip.samples.mean(axis=0))] + [(path.stem, wave) for path, wave in zip(paths, clips)]
        jobs.append((picture, partial(_write_picture, labelled, clip.sample_rate)))
    jobs.append((record, partial(cli_common.write_json, value=facts)))
    if saved:
        jobs.append((saved, inv.save))
    cli_common.write_all(jobs)  # all files or none
    for path in [*paths, *([picture] if picture else [])]:
        print(path)


def _write_wave(wave: np.ndarray, sample_rate: int, path: Path) -> None:
    """Write a mono edit (n,) at ``sample_rate`` Hz to a temporary of ``replacing`` (no temporary of its own)."""
    from .audio_io import write_audio

    write_audio(path, wave, sample_rate)


def _write_picture(labelled: list[tuple[str, np.ndarray]], sample_rate: int, path: Path) -> None:
    """Write the spectrograms of (label, samples) pairs to a temporary of ``replacing``."""
    from .spectrogram import write_spectrograms

    write_spectrograms(path, labelled, sample_rate)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``audio-edit``."""
    cli_common.run(lambda: _main(argv if argv is not None else sys.argv[1:]))
