"""``audio-edit``: edit a recording with text prompts from the command line."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from image_core import cli_common
from image_core.files import replacing

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
    args = parser.parse_args(argv)
    cli_common.check_arguments(args)
    from .audio_io import check_output, load_audio, save_audio

    clip = load_audio(args.input)  # a bad input fails before the model loads
    seeds = list(range(args.seed, args.seed + args.num_outputs))
    paths = cli_common.output_paths(args.input, args.out, args.target, seeds, ".wav")
    picture = paths[0].with_name(f"{paths[0].stem}_spectrogram.png") if args.spectrogram else None
    outputs = paths + ([picture] if picture else [])
    cli_common.check_outputs(outputs, args.input, args.overwrite)
    for path in paths:
        check_output(path, 1, clip.sample_rate)

    from .editor import AudioEditor

    editor = AudioEditor.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    inv = editor.invert(clip, args.source, args.steps, args.tstart, args.cfg_src, args.eta, seeds)
    clips = editor.edit(inv, args.target, args.cfg_tar, args.negative)
    with replacing(*outputs) as temporaries:  # all files or none
        for temporary, wave in zip(temporaries, clips):
            save_audio(temporary, wave, clip.sample_rate)
        if picture:
            from .spectrogram import save_spectrograms

            labelled = [("input", clip.samples.mean(axis=0))] + [(path.stem, wave) for path, wave in zip(paths, clips)]
            save_spectrograms(temporaries[-1], labelled, clip.sample_rate)
    for path in outputs:
        print(path)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``audio-edit``."""
    cli_common.run(lambda: _main(argv if argv is not None else sys.argv[1:]))
