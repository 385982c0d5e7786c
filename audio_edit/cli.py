"""``audio-edit``: edit a recording with text prompts from the command line."""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from image_core import cli_common
from image_core.batch import Command
from image_core.cli_outputs import Prepared
from image_core.errors import InputError
from image_core.runner import run_request
from image_core.settings import check_interval

from . import defaults


def _parser() -> cli_common.Parser:
    """The arguments of ``audio-edit`` (every row of ``audio-edit batch`` is parsed by them too)."""
    parser = cli_common.edit_parser(
        "audio-edit",
        "Edit a recording with text by edit-friendly DDPM inversion (AudioLDM / AudioLDM2: mono; Stable Audio "
        "Open and ACE-Step 1.5: stereo). The edit is at the input's sample rate, length and loudness. The defaults of "
        "--steps, --tstart, --cfg-src and --cfg-tar shown are AudioLDM's: Stable Audio Open (200 / 100 / 1 / 12) and "
        "ACE-Step (8 / 6 / 1, and --cfg-tar 1 on turbo checkpoints, 7 on others) use their own unless given.",
        model=defaults.MODEL,
        steps=defaults.NUM_STEPS,
        t_start=defaults.T_START,
        cfg_src=defaults.CFG_SRC,
        cfg_tar=defaults.CFG_TAR,
        region='a time range and/or a frequency band, e.g. "2.0:4.5s", "200:2000Hz" or "2.0:4.5s,200:2000Hz"',
        tiny="tiny (AudioLDM 2) or tiny-audioldm",
    )
    parser.add_argument("--region", default=None, metavar="START:END", help="limit the --pc components to this time range in seconds")
    parser.add_argument("--band", default=None, metavar="LOW:HIGH", help="limit the --pc components to this band in Hz (0..8000)")
    parser.add_argument("--spectrogram", action="store_true", help="also write a PNG of the input's and the edits' spectrograms")
    parser.add_argument("--lyrics", default=None, metavar="TEXT|@FILE",
                        help="ACE-Step only: the lyrics the recording sings, or @FILE to read them from a UTF-8 text file "
                             "(default: instrumental); the source and the targets are conditioned on them")
    parser.add_argument("--target-lyrics", default=None, metavar="TEXT|@FILE",
                        help="ACE-Step only: the lyrics the targets sing instead (a lyrics edit; give the source's "
                             "caption as --target to change the words alone)")  # fmt: skip
    parser.model_defaults = _model_defaults  # Stable Audio Open's and ACE-Step's own defaults; --lyrics for ACE-Step only
    return parser


def _read(args: Any) -> Prepared:
    """Read and check the input of parsed arguments, its regions and --inversion, before the model loads."""
    from .audio_io import load_audio

    clip = load_audio(args.input)  # a bad input fails before the model loads
    from .loudness import warn_if_silent

    warn_if_silent(clip.samples)  # before the model loads (the editor's read does not repeat it)
    ranges = _ranges(args.mask, clip.duration)
    pc_ranges = _pc_ranges(args, clip.duration)
    cli_common.check_mask_file(args, ranges is not None)
    loaded = cli_common.load_inversion(args) if args.inversion else None
    if loaded is not None:
        facts = {"sample_rate": clip.sample_rate, "num_frames": clip.num_frames}
        cli_common.check_inversion_fits(loaded, facts, "sample rate and length", args.inversion)
    seeds = list(loaded.settings.seeds) if loaded else list(range(args.seed, args.seed + args.num_outputs))
    request = cli_common.request_from_args(args, ranges, pc_ranges, parsed=True)
    if args.target_lyrics is not None:  # every target sung with them (``ace_step.Sung``)
        from .ace_step import Sung

        request = dataclasses.replace(request, targets=tuple(Sung(target, args.target_lyrics) for target in request.targets))
    return Prepared(args, clip, request, loaded, seeds)


def _lyrics(text: str | None, option: str) -> str | None:
    """Lyrics as text (stripped): "@FILE" read from a UTF-8 file; InputError for a file that cannot be read."""
    if text is None or not text.startswith("@"):
        return None if text is None else text.strip()
    path = Path(text[1:])
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = "is not UTF-8 text" if isinstance(error, UnicodeDecodeError) else f"cannot be read ({error.strerror or error})"
        raise InputError(f"{option} {text}: {path} {reason}: give the lyrics as text, or a readable UTF-8 file") from None


def _model_defaults(args: Any) -> None:
    """Give --steps, --tstart, --cfg-src and --cfg-tar not given on the command line the editor
    defaults of Stable Audio Open or ACE-Step when --model is one (the parser's are AudioLDM's);
    refuse --lyrics and --target-lyrics for a model that is not ACE-Step (and target lyrics without
    a target), and read them from their files (so batch rows are keyed and grouped by the lyrics
    themselves)."""
    from .ace_step import ACE_STEP_ID, is_ace_step
    from .stable_audio import is_stable_audio

    for option, given in (("--lyrics", args.lyrics), ("--target-lyrics", args.target_lyrics)):
        if given is not None and not is_ace_step(args.model):
            raise InputError(f"{option} conditions ACE-Step models, not {args.model}: leave it out, or give --model {ACE_STEP_ID}")
    if args.target_lyrics is not None and not args.target:
        raise InputError("--target-lyrics are sung by the targets: give --target too (the source's caption to change the words alone)")
    args.lyrics, args.target_lyrics = _lyrics(args.lyrics, "--lyrics"), _lyrics(args.target_lyrics, "--target-lyrics")
    if is_stable_audio(args.model):
        from .stable_audio_editor import DEFAULTS as model_defaults
    elif is_ace_step(args.model):
        from .ace_step_editor import defaults_for_name

        model_defaults = defaults_for_name(args.model)
    else:
        return
    for dest, field in (("steps", "num_steps"), ("tstart", "t_start"), ("cfg_src", "cfg_src"), ("cfg_tar", "cfg_tar")):
        if dest not in args.given:
            setattr(args, dest, getattr(model_defaults, field))


def _main(argv: Sequence[str]) -> None:
    args = cli_common.parse_arguments(_parser(), argv)
    cli_common.set_threads(args.threads)
    edit = _read(args)
    clip, seeds = edit.item, edit.seeds
    from .audio_io import check_output

    paths = cli_common.output_paths(args.input, args.out, cli_common.name_targets(args), seeds, ".wav")
    picture = paths[0].with_name(f"{paths[0].stem}_spectrogram.png") if args.spectrogram else None
    record = cli_common.record_path(paths[0])
    saved = cli_common.inversion_output(args.save_inversion)
    mask_file = cli_common.mask_output(args.save_mask)
    pcs_file = cli_common.inversion_output(args.save_pcs, "--save-pcs")
    attention = cli_common.mask_output(args.save_attention, "--save-attention")
    planned = [*paths, *([picture] if picture else []), *([attention] if attention else []), record, *([saved] if saved else []), *([mask_file] if mask_file else []), *([pcs_file] if pcs_file else [])]
    cli_common.check_outputs(planned, [args.input, *([args.inversion] if args.inversion else [])], args.overwrite)
    for path in paths:
        check_output(path, 1, clip.sample_rate)

    editor = _load_editor(args, args.device)
    edited = run_request(editor, edit.request, clip, edit.loaded)
    outputs = [(path, partial(_write_wave, wave, clip.sample_rate)) for path, wave in zip(paths, edited.outputs)]
    extra = cli_common.attention_job(args, editor, edited)
    if picture:
        labelled = [("input", clip.samples.mean(axis=0))] + [(path.stem, wave) for path, wave in zip(paths, edited.outputs)]
        extra["spectrogram"] = (picture, partial(_write_picture, labelled, clip.sample_rate))
    cli_common.write_run("audio-edit", args, editor, edited, seeds, outputs, extra, (saved, mask_file, pcs_file))


def _load_editor(args: Any, device: str, **options: Any) -> Any:
    """The ``AudioEditor`` of --model, --dtype and the editor options, on ``device``."""
    from .editor import AudioEditor

    return AudioEditor.from_pretrained(args.model, device=device, dtype=args.dtype, **cli_common.editor_options(args), **options)


def _check_output(edit: Prepared, path: Path) -> None:
    """InputError unless an edit of ``edit``'s input can be written to ``path`` (its format)."""
    from .audio_io import check_output

    check_output(path, 1, edit.item.sample_rate)


def _write_output(edit: Prepared, wave: np.ndarray, path: Path) -> None:
    """Write one edit of ``edit``'s input to ``path`` (a temporary of ``replacing``)."""
    _write_wave(wave, edit.item.sample_rate, path)


_RANGE = re.compile(r"^\s*([-+\d.eE]+)\s*:\s*([-+\d.eE]+)\s*(s|hz)\s*$", re.IGNORECASE)


def _ranges(text: str | None, duration: float) -> dict[str, tuple[float, float]] | None:
    """The ``region_mask`` arguments of a --mask region ("2.0:4.5s", "200:2000Hz" or both, comma-
    separated), checked against a clip of ``duration`` seconds and what the model hears; None when
    ``text`` is no region."""
    parts = [_RANGE.match(part) for part in (text or "").split(",")]
    if text is None or not all(parts) or len(parts) > 2:
        return None
    from .audio_io import MODEL_SAMPLE_RATE

    found: dict[str, tuple[float, float]] = {}
    for match in parts:
        unit = "seconds" if match[3].lower() == "s" else "hz"  # type: ignore[index]
        if unit in found:
            raise InputError(f"--mask {text!r} gives two {unit} ranges: give one time range and/or one band")
        if unit == "seconds":
            found[unit] = check_interval((match[1], match[2]), 0, duration, "time range", f"the clip's 0..{duration:.2f} s")  # type: ignore[index]
        else:
            nyquist = MODEL_SAMPLE_RATE / 2
            found[unit] = check_interval((match[1], match[2]), 0, nyquist, "frequency band", f"0..{nyquist:.0f} Hz, what the model hears")  # type: ignore[index]
    return found


def _pc_ranges(args: Any, duration: float) -> dict[str, tuple[float, float]] | None:
    """The ``region_mask`` arguments of --region (seconds) and --band (Hz), checked; None without them."""
    parts = [f"{args.region}s" if args.region else None, f"{args.band}Hz" if args.band else None]
    text = ",".join(part for part in parts if part)
    if not text:
        return None
    found = _ranges(text, duration)
    if found is None:
        raise InputError(f"--region takes START:END in seconds and --band LOW:HIGH in Hz, got {text!r}")
    return found


def _write_wave(wave: np.ndarray, sample_rate: int, path: Path) -> None:
    """Write a mono edit (n,) at ``sample_rate`` Hz to a temporary of ``replacing`` (no temporary of its own)."""
    from .audio_io import write_audio

    write_audio(path, wave, sample_rate)


def _write_picture(labelled: list[tuple[str, np.ndarray]], sample_rate: int, path: Path) -> None:
    """Write the spectrograms of (label, samples) pairs to a temporary of ``replacing``."""
    from .spectrogram import write_spectrograms

    write_spectrograms(path, labelled, sample_rate)


COMMAND = Command(
    name="audio-edit", modality="audio", extension=".wav", parser=_parser, read=_read, load_editor=_load_editor,
    check_output=_check_output, write_output=_write_output,
)  # fmt: skip
"""``audio-edit`` as ``audio-edit batch`` runs it, row after row."""


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``audio-edit`` (and of ``audio-edit batch MANIFEST``)."""
    cli_common.run_command(COMMAND, _main, argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":  # python -m audio_edit.cli (e.g. under accelerate launch -m)
    main()
