"""What the image and audio command-line tools share: arguments, output names, error handling."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from .errors import EditError, InputError
from .settings import check_settings, consecutive_seeds


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (and exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def edit_parser(prog: str, description: str, *, model: str, steps: int, t_start: int, cfg_src: float, cfg_tar: float) -> Parser:
    """The arguments both editors take, with the given paper defaults."""
    p = Parser(prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("input", help="the file to edit (never modified)")
    p.add_argument("--target", action="append", required=True, metavar="TEXT", help="target prompt; repeat for several edits")
    p.add_argument("--source", default="", metavar="TEXT", help="source prompt describing the input")
    p.add_argument("--negative", default="", metavar="TEXT", help="negative prompt of the edit (the unconditional branch)")
    p.add_argument("--model", default=model, metavar="ID|PATH|tiny", help="hub id, local folder, or the random 'tiny' model")
    p.add_argument("--steps", type=int, default=steps, help="diffusion steps of the full chain")
    p.add_argument("--tstart", type=int, default=t_start, help="steps the edit runs (higher: stronger edit, less of the input kept)")
    p.add_argument("--cfg-src", type=float, default=cfg_src, help="guidance scale of the source prompt during inversion")
    p.add_argument("--cfg-tar", type=float, default=cfg_tar, help="guidance scale of the target prompt")
    p.add_argument("--eta", type=float, default=1.0, help="sampler noise in (0, 1]; 1 is DDPM")
    p.add_argument("--seed", type=int, default=0, help="seed of the inversion noise")
    p.add_argument("--num-outputs", type=int, default=1, metavar="N", help="N inversions with seeds seed..seed+N-1 per target")
    p.add_argument("--out", default=None, metavar="PATH", help="output file (several outputs get suffixes)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"], help="auto: float16 on cuda, else float32")
    return p


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse settings and prompts no edit can run with, before anything is loaded."""
    check_settings(args.steps, args.tstart, args.eta, args.cfg_src, args.cfg_tar)
    if any(not target.strip() for target in args.target):
        raise InputError("--target must not be empty: describe the edit, e.g. --target \"jazz piano\"")
    if not 1 <= args.num_outputs <= 64:
        raise InputError(f"--num-outputs must be between 1 and 64, got {args.num_outputs}")
    consecutive_seeds(args.seed, args.num_outputs, "--seed")


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of a prompt."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "edit"


def output_paths(input_path: str, out: str | None, targets: Sequence[str], seeds: Sequence[int], extension: str) -> list[Path]:
    """One path per (target, seed), target-major; checked to be new, writable and not the input.

    Default: ``<input folder>/<input stem>_edit<extension>``. With several outputs each name gets
    ``_<target>_s<seed>`` before the extension.
    """
    source = Path(input_path)
    base = Path(out) if out else source.with_name(f"{source.stem}_edit{extension}")
    if not base.suffix:
        base = base.with_suffix(extension)
    if len(targets) * len(seeds) == 1:
        return [base]
    names = [f"{base.stem}_{slug(t)}_s{s}" for t in targets for s in seeds]
    if len(set(names)) < len(names):  # the same target twice
        names = [f"{name}_{i}" for i, name in enumerate(names)]
    return [base.with_name(name + base.suffix) for name in names]


def check_outputs(paths: Sequence[Path], input_path: str, overwrite: bool) -> None:
    """InputError if an output is the input, exists (without overwrite), or cannot be written."""
    source = Path(input_path).resolve()
    for path in paths:
        if path.resolve() == source:
            raise InputError(f"the output {path} is the input file: choose another --out")
        if path.exists() and not overwrite:
            raise InputError(f"{path} exists: pass --overwrite to replace it, or choose another --out")
        folder = path.parent
        if not folder.is_dir():
            raise InputError(f"output folder {folder} does not exist: create it or choose another --out")
        if not os.access(folder, os.W_OK):
            raise InputError(f"output folder {folder} is not writable: choose another --out")


def quiet_hub_logging() -> None:
    """Keep the hub client's retry warnings off stderr (an offline load then fails in one line;
    download progress bars are not affected)."""
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()


def run(main: Callable[[], None]) -> None:
    """Run a command: user errors as one line on stderr with exit code 2, Ctrl-C as exit code 130."""
    quiet_hub_logging()
    try:
        main()
    except EditError as error:
        print(f"error: {str(error).splitlines()[0] if str(error) else type(error).__name__}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
