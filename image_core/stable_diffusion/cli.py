"""``image-edit``: edit an image with text prompts from the command line."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .. import cli_common
from ..files import replacing
from .model import DEFAULT_MODEL


def _main(argv: Sequence[str] | None) -> None:
    parser = cli_common.edit_parser(
        "image-edit",
        "Edit an image with text by edit-friendly DDPM inversion (Stable Diffusion).",
        model=DEFAULT_MODEL,
        steps=100,
        t_start=64,
        cfg_src=3.5,
        cfg_tar=15.0,
    )
    args = parser.parse_args(argv)
    cli_common.check_arguments(args)
    from .images import load_image

    load_image(args.input)  # a bad input fails before the model loads
    seeds = list(range(args.seed, args.seed + args.num_outputs))
    paths = cli_common.output_paths(args.input, args.out, args.target, seeds, ".png")
    cli_common.check_outputs(paths, args.input, args.overwrite)
    formats = [_format(path.suffix) for path in paths]

    from .editor import ImageEditor

    editor = ImageEditor.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    inv = editor.invert(args.input, args.source, args.steps, args.tstart, args.cfg_src, args.eta, seeds)
    images = editor.edit(inv, args.target, args.cfg_tar, args.negative)
    with replacing(*paths) as temporaries:  # all files or none
        for temporary, fmt, image in zip(temporaries, formats, images):
            image.save(temporary, format=fmt)
    for path in paths:
        print(path)


def _format(suffix: str) -> str:
    from PIL import Image

    Image.init()
    fmt = Image.EXTENSION.get(suffix.lower())
    if fmt is None:
        from ..errors import InputError

        raise InputError(f"unknown image extension {suffix!r}: use .png, .jpg or .webp")
    return fmt


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``image-edit``."""
    cli_common.run(lambda: _main(argv if argv is not None else sys.argv[1:]))
