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
from ..batch import Command
from ..cli_outputs import Prepared
from ..errors import InputError
from ..runner import run_request
from ..settings import check_interval
from .codec import DEFAULTS
from .model import DEFAULT_MODEL


def _parser() -> cli_common.Parser:
    """The arguments of ``image-edit`` (every row of ``image-edit batch`` is parsed by them too)."""
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
    return parser


def _read(args: Any) -> Prepared:
    """Read and check the input of parsed arguments, its regions and --inversion, before the model loads."""
    from .images import CONVERTED_KEY, load_image

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
    return Prepared(args, picture, cli_common.request_from_args(args, box, pc_box, parsed=True), loaded, seeds)


def _main(argv: Sequence[str]) -> None:
    args = cli_common.parse_arguments(_parser(), argv)
    cli_common.set_threads(args.threads)
    edit = _read(args)
    picture, seeds = edit.item, edit.seeds
    paths = cli_common.output_paths(args.input, args.out, cli_common.name_targets(args), seeds, ".png")
    formats = [_format(path.suffix) for path in paths]
    _alpha_note(picture, paths[0], formats)
    record = cli_common.record_path(paths[0])
    saved = cli_common.inversion_output(args.save_inversion)
    mask_file = cli_common.mask_output(args.save_mask)
    pcs_file = cli_common.inversion_output(args.save_pcs, "--save-pcs")
    attention = cli_common.mask_output(args.save_attention, "--save-attention")
    planned = [*paths, *([attention] if attention else []), record, *([saved] if saved else []), *([mask_file] if mask_file else []), *([pcs_file] if pcs_file else [])]
    cli_common.check_outputs(planned, [args.input, *([args.inversion] if args.inversion else [])], args.overwrite)

    editor = _load_editor(args, args.device)
    edited = run_request(editor, edit.request, picture, edit.loaded)
    outputs = [(path, partial(_save_image, image, fmt)) for path, image, fmt in zip(paths, edited.outputs, formats)]
    extra = cli_common.attention_job(args, editor, edited)
    cli_common.write_run("image-edit", args, editor, edited, seeds, outputs, extra, (saved, mask_file, pcs_file))


def _alpha_note(picture: Any, path: Path, formats: Sequence[str]) -> None:
    """Warn when a picture with transparency is to be written in a format without it."""
    from .images import ALPHA_KEY

    if picture.info.get(ALPHA_KEY) is not None and any(fmt in _NO_ALPHA for fmt in formats):
        warnings.warn(f"{path.suffix} holds no transparency: the edits are written on white (use .png or .webp to keep it)")


def _load_editor(args: Any, device: str, **options: Any) -> Any:
    """The ``ImageEditor`` of --model, --dtype and the editor options, on ``device``."""
    from .editor import ImageEditor

    return ImageEditor.from_pretrained(args.model, device=device, dtype=args.dtype, **cli_common.editor_options(args), **options)


def _check_output(edit: Prepared, path: Path) -> None:
    """InputError unless ``path`` names an image format (warning when it drops the input's transparency)."""
    _alpha_note(edit.item, path, [_format(path.suffix)])


def _write_output(edit: Prepared, image: Any, path: Path) -> None:
    """Write one edit to ``path`` (a temporary of ``replacing``) in the format its name asks for."""
    _save_image(image, _format(path.suffix), path)


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


COMMAND = Command(
    name="image-edit", modality="image", extension=".png", parser=_parser, read=_read, load_editor=_load_editor,
    check_output=_check_output, write_output=_write_output,
)  # fmt: skip
"""``image-edit`` as ``image-edit batch`` runs it, row after row."""


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``image-edit`` (and of ``image-edit batch MANIFEST``)."""
    cli_common.run_command(COMMAND, _main, argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":  # python -m image_core.stable_diffusion.cli (e.g. under accelerate launch -m)
    main()
