"""``image-edit``: edit an image with text prompts from the command line."""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from .. import cli_common
from ..errors import InputError
from ..runner import run_request
from ..settings import check_interval
from .codec import DEFAULTS
from .model import DEFAULT_MODEL


def _main(argv: Sequence[str]) -> None:
    parser = cli_common.edit_parser(
        "image-edit",
        "Edit an image with text by edit-friendly DDPM inversion (Stable Diffusion).",
        model=DEFAULT_MODEL,
        steps=DEFAULTS.num_steps,
        t_start=DEFAULTS.t_start,
        cfg_src=DEFAULTS.cfg_src,
        cfg_tar=DEFAULTS.cfg_tar,
        region="a box x0,y0,x1,y1 in the input's pixels",
    )
    parser.add_argument("--region", default=None, metavar="X0,Y0,X1,Y1", help="limit the --pc components to this box in pixels")
    args = cli_common.parse_arguments(parser, argv)
    cli_common.set_threads(args.threads)
    from .images import ALPHA_KEY, CONVERTED_KEY, load_image

    picture = load_image(args.input)  # a bad input fails before the model loads
    converted = picture.info.get(CONVERTED_KEY)
    if converted:  # the mode the model cannot edit as it is, said before the work starts
        warnings.warn(f"{Path(args.input).name} is {converted}")
    box = _box(args.mask, picture.size)
    pc_box = _box(args.region, picture.size)
    if args.region is not None and pc_box is None:
        raise InputError(f"--region takes a box x0,y0,x1,y1 in pixels, got {args.region!r}")
    cli_common.check_mask_file(args, box is not None)
    loaded = cli_common.load_inversion(args) if args.inversion else None
    if loaded is not None:
        cli_common.check_inversion_fits(loaded, {"size": list(picture.size)}, "size", args.inversion)
    seeds = list(loaded.settings.seeds) if loaded else list(range(args.seed, args.seed + args.num_outputs))
    paths = cli_common.output_paths(args.input, args.out, cli_common.name_targets(args), seeds, ".png")
    formats = [_format(path.suffix) for path in paths]
    if picture.info.get(ALPHA_KEY) is not None and any(fmt in _NO_ALPHA for fmt in formats):
        warnings.warn(f"{paths[0].suffix} holds no transparency: the edits are written on white (use .png or .webp to keep it)")
    record = cli_common.record_path(paths[0])
    saved = cli_common.inversion_output(args.save_inversion)
    mask_file = cli_common.mask_output(args.save_mask)
    pcs_file = cli_common.inversion_output(args.save_pcs, "--save-pcs")
    planned = [*paths, record, *([saved] if saved else []), *([mask_file] if mask_file else []), *([pcs_file] if pcs_file else [])]
    cli_common.check_outputs(planned, [args.input, *([args.inversion] if args.inversion else [])], args.overwrite)

    from .editor import ImageEditor

    editor = ImageEditor.from_pretrained(args.model, device=args.device, dtype=args.dtype, **cli_common.editor_options(args))
    request = cli_common.request_from_args(args, box, pc_box, parsed=True)
    edited = run_request(editor, request, picture, loaded)
    outputs = [(path, partial(_save_image, image, fmt)) for path, image, fmt in zip(paths, edited.outputs, formats)]
    cli_common.write_run("image-edit", args, editor, edited, seeds, outputs, {}, (saved, mask_file, pcs_file))


_BOX = re.compile(r"^\s*-?[\d.]+(\s*,\s*-?[\d.]+){3}\s*$")


def _box(text: str | None, size: tuple[int, int]) -> list[float] | None:
    """The box of a --mask "x0,y0,x1,y1" (pixels), checked to lie inside the picture of ``size``;
    None when ``text`` is no box."""
    if text is None or not _BOX.match(text):
        return None
    box = [float(v) for v in text.split(",")]
    allowed = f"the {size[0]}x{size[1]} image"
    check_interval((box[0], box[2]), 0, size[0], "box's x range", allowed)
    check_interval((box[1], box[3]), 0, size[1], "box's y range", allowed)
    return box


_NO_ALPHA = ("JPEG", "BMP", "PPM")  # formats without an alpha channel


def _save_image(image: Any, fmt: str, path: Path) -> None:
    """Write a PIL image to ``path`` in the PIL format ``fmt`` (whatever the name's extension); an
    RGBA edit written where the format holds no alpha is shown on white (``_alpha_note`` says so)."""
    if image.mode == "RGBA" and fmt in _NO_ALPHA:
        from PIL import Image

        flat = Image.new("RGB", image.size, (255, 255, 255))
        flat.paste(image, mask=image.getchannel("A"))
        image = flat
    image.save(path, format=fmt)


def _format(suffix: str) -> str:
    from PIL import Image

    Image.init()
    fmt = Image.EXTENSION.get(suffix.lower())
    if fmt is None:
        raise InputError(f"unknown image extension {suffix!r}: use .png, .jpg or .webp")
    return fmt


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``image-edit``."""
    cli_common.run(lambda: _main(argv if argv is not None else sys.argv[1:]))
