"""What the image and audio command-line tools share: arguments, output names, the run record, error handling."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import EditError, InputError
from .files import check_name_length, final_path, replacing
from .request import FIXED_BY_INVERSION, METHODS, EditRequest, MaskChoice, PCOptions, Region, check_request

if TYPE_CHECKING:
    from .inversion import Inversion, InversionSettings
    from .runner import Edited

MAX_THREADS = 1024
"""Largest --threads accepted (far above any machine's cores; guards against typos)."""

SLUG_BYTES = 40
"""Longest prompt part of an output name, in UTF-8 bytes (keeps names far below the usual 255-byte limit)."""

_UNSET = object()  # marks an option the command line did not give


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (and exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults in --help, except None (such options say in words what happens without them)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def edit_parser(
    prog: str, description: str, *, model: str, steps: int, t_start: int, cfg_src: float, cfg_tar: float, region: str
) -> Parser:
    """The arguments both editors take, with the given paper defaults; ``region`` tells how --mask
    writes a region of this kind of input."""
    p = Parser(prog=prog, description=description, formatter_class=_HelpFormatter)
    p.add_argument("input", help="the file to edit (never modified)")
    p.add_argument("--target", action="append", metavar="TEXT", help="target prompt; repeat for several edits (optional with --add/--remove)")
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
    p.add_argument(
        "--out", default=None, metavar="PATH",
        help="output file (default: <input stem>_edit beside the input), or an existing folder (or a path ending with a separator) to write the default name into; "
        "several outputs get _<target>_s<seed> suffixes (_<target>_t<i>_s<seed>, i the target's index from 0, "
        "where two targets give the same name). A JSON record of the run is written beside them as <first output>.json",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument(
        "--method", default="ddpm", choices=METHODS,
        help="ddpm: edit-friendly DDPM inversion (exact reconstruction, keeps the structure); ddim: DDIM inversion "
        "(deterministic baseline, one seed); null-text: DDIM inversion whose unconditional branch is optimised at "
        "every step for the guidance of --cfg-tar (baseline, one seed, about 10x the model calls); "
        "sdedit: noise to --tstart and sample the target (baseline, nothing inverted)",
    )  # fmt: skip
    p.add_argument("--inner-steps", type=int, default=10, metavar="N",
                   help="null-text: Adam steps per diffusion step (the paper's 10)")  # fmt: skip
    p.add_argument("--early-stop", type=float, default=1e-5, metavar="LOSS",
                   help="null-text: a step stops once its loss is below LOSS, growing to about 100 x LOSS at the last "
                   "step (the paper's); 0 always runs every inner step")  # fmt: skip
    p.add_argument(
        "--mask", default=None, metavar="auto|PATH|REGION",
        help=f"edit only inside a mask, keeping the rest of the input exactly: auto (DiffEdit: where the target and "
        f"source descriptions disagree; one --target), a PNG (white = edit, e.g. from --save-mask), or {region}",
    )  # fmt: skip
    p.add_argument("--save-mask", default=None, metavar="FILE.png", help="also write the mask as a picture (--mask reads it back)")
    p.add_argument("--add", action="append", default=[], metavar="TEXT", help="a concept to add by semantic guidance (LEDITS); repeatable")
    p.add_argument("--remove", action="append", default=[], metavar="TEXT", help="a concept to remove by semantic guidance; repeatable")
    p.add_argument("--concept-scale", type=float, default=10.0, help="strength of each --add/--remove concept (LEDITS demo: 10)")
    p.add_argument("--threshold", type=float, default=0.95,
                   help="concepts guide only the cells where they differ most: this quantile per channel, in [0, 1)")  # fmt: skip
    p.add_argument("--warmup", type=int, default=1, help="edit steps before the concepts start guiding")
    p.add_argument("--pc", action="append", type=int, default=[], metavar="K",
                   help="no prompt: move the input along principal component K of the posterior (from 1; repeatable)")  # fmt: skip
    p.add_argument("--amount", action="append", type=float, default=[], metavar="A",
                   help="standard deviations to move along each --pc (repeatable; default 2, the audio paper's)")  # fmt: skip
    p.add_argument("--pc-at", type=int, default=0, metavar="STEP",
                   help="the step of the edit whose posterior gives the components (0: its first, x_tstart)")  # fmt: skip
    p.add_argument("--pc-iterations", type=int, default=50, metavar="N",
                   help="at most N subspace iterations (one batched model call each); stops earlier once converged")  # fmt: skip
    p.add_argument("--save-pcs", default=None, metavar="FILE", help="also write the principal components to FILE")
    p.add_argument("--pcs", default=None, metavar="FILE", help="use the principal components saved in FILE (of this inversion)")
    p.add_argument(
        "--save-inversion", default=None, metavar="FILE",
        help="also write the inversion (noise maps and settings, safetensors) to FILE, to edit again with --inversion",
    )  # fmt: skip
    p.add_argument(
        "--inversion", default=None, metavar="FILE",
        help="edit the inversion saved in FILE instead of inverting the input again; its steps, tstart, cfg-src, eta, "
        "seeds and source prompt are used, so those options cannot be given with it",
    )  # fmt: skip
    p.add_argument(
        "--inversion-batch", type=int, default=None, metavar="N",
        help="(x_t, t) rows per model call during inversion (default: the editor's, 16); fewer use less memory, "
        "and 1 makes reconstruction bitwise identical to the inversion's own model calls, which matters with float16",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=int, default=None, metavar="N",
        help="CPU threads torch may use (default: torch's own choice, usually all cores); lower it on shared machines",
    )  # fmt: skip
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"], help="auto: float16 on cuda, else float32")
    return p


def parse_arguments(parser: Parser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv`` and refuse, in one line, any value no edit can run with (before anything loads):
    ``check_request`` of the request the arguments make, then what only the command line has.

    The namespace gets ``given``: the dests of ``FIXED_BY_INVERSION`` and --cfg-tar the command line
    set explicitly; ``target`` is a list (empty without --target).
    """
    tracked = [*FIXED_BY_INVERSION, "cfg_tar"]
    unset = argparse.Namespace(**{dest: _UNSET for dest in tracked})
    args = parser.parse_args(argv, namespace=unset)
    args.given = {dest for dest in tracked if getattr(args, dest) is not _UNSET}
    for dest in set(tracked) - args.given:
        setattr(args, dest, parser.get_default(dest))
    args.target = args.target or []
    check_request(request_from_args(args))
    _check_command_line(args)
    return args


def request_from_args(
    args: argparse.Namespace, mask_region: Region | None = None, pc_region: Region | None = None, *, parsed: bool = False
) -> EditRequest:
    """The ``EditRequest`` of the command line's arguments.

    Before the input is read (``parsed`` False) a --mask other than auto stands as a file name and
    --region / --band as their text: all ``check_request`` needs. Once the input is read the command
    passes ``parsed`` True with the regions it parsed (``mask_region`` None: --mask is auto, a file or
    not given; ``pc_region`` None: no --region / --band).
    """
    save_mask = args.save_mask is not None
    if args.mask is None:
        mask = MaskChoice(save=save_mask)
    elif args.mask == "auto":
        mask = MaskChoice(auto=True, save=save_mask)
    elif mask_region is not None:
        mask = MaskChoice(region=mask_region, save=save_mask)
    else:
        mask = MaskChoice(file=args.mask, save=save_mask)
    typed = [text for text in (args.region, getattr(args, "band", None)) if text is not None]
    pcs = PCOptions(
        components=tuple(args.pc), amounts=tuple(args.amount), at_step=args.pc_at, iterations=args.pc_iterations,
        region=pc_region if parsed else (typed[0] if typed else None), file=args.pcs, save=args.save_pcs is not None,
    )  # fmt: skip
    return EditRequest(
        method=args.method, source=args.source, targets=tuple(args.target), negative=args.negative,
        steps=args.steps, tstart=args.tstart, cfg_src=args.cfg_src, cfg_tar=args.cfg_tar, eta=args.eta,
        seed=args.seed, num_outputs=args.num_outputs, concepts=tuple(_concepts(args)), mask=mask, pcs=pcs,
        inner_steps=args.inner_steps, early_stop=args.early_stop, inversion_loaded=args.inversion is not None,
        save_inversion=args.save_inversion is not None, given=frozenset(getattr(args, "given", ())),
    )  # fmt: skip


def _check_command_line(args: argparse.Namespace) -> None:
    """Refuse what only the command line has: a --pcs file that is missing or saves too few
    components, and --inversion-batch / --threads out of range."""
    if args.pc and args.pcs is not None:
        if not Path(args.pcs).is_file():
            raise InputError(f"principal components file not found: {args.pcs}")
        from .methods.pcs import PosteriorPCs

        count = PosteriorPCs.load(args.pcs).count
        if max(args.pc) > count:
            raise InputError(f"--pc must be between 1 and {count}, the components saved in {args.pcs}, got {max(args.pc)}")
    if args.inversion_batch is not None and args.inversion_batch < 1:
        raise InputError(f"--inversion-batch must be a positive integer, got {args.inversion_batch}")
    if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
        raise InputError(f"--threads must be between 1 and {MAX_THREADS}, got {args.threads}")


def editor_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of ``from_pretrained`` the command line sets (only those given)."""
    return {} if args.inversion_batch is None else {"inversion_batch_size": args.inversion_batch}


def set_threads(threads: int | None) -> None:
    """Let torch use ``threads`` CPU threads (None: leave torch's own choice)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------- file names


def slug(text: str, limit: int = SLUG_BYTES) -> str:
    """A file-name-safe short form of a prompt: letters, marks and digits of any script kept (NFKC,
    case-folded), every other run of characters one ``-``, at most ``limit`` UTF-8 bytes; ``edit``
    when nothing is left (a prompt of emoji or punctuation only)."""
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    kept = "".join(c if unicodedata.category(c)[0] in "LMN" else "-" for c in text)
    words = "-".join(word for word in kept.split("-") if word)
    cut = words.encode("utf-8")[:limit].decode("utf-8", errors="ignore")
    return cut.strip("-") or "edit"


def ends_with_separator(path: str) -> bool:
    """Whether ``path`` ends with a path separator (it names a folder)."""
    return path.endswith(os.sep) or bool(os.altsep and path.endswith(os.altsep))


def output_base(input_path: str, out: str | None, extension: str) -> Path:
    """The output file of a single edit.

    Default: ``<input folder>/<input stem>_edit<extension>``; ``out`` an existing folder (or ending with a
    separator): that name inside it; ``out`` without an extension gets ``extension``.
    """
    source = Path(input_path)
    default = f"{source.stem}_edit{extension}"
    if out is None:
        return source.with_name(default)
    base = Path(out)
    check_name_length(base)  # before asking the file system about it (too long a name is an OSError there)
    if ends_with_separator(out) and not base.is_dir():
        raise InputError(f"output folder {out} does not exist: create it, or leave out the trailing separator to name a file")
    if base.is_dir():
        return base / default
    return base if base.suffix else base.with_suffix(extension)


def output_paths(input_path: str, out: str | None, targets: Sequence[str], seeds: Sequence[int], extension: str) -> list[Path]:
    """One path per (target, seed), target-major (see ``output_base`` for ``out``).

    With several outputs each name gets ``_<slug of target>_s<seed>`` before the extension; targets whose
    slugs coincide get ``_<slug>_t<i>_s<seed>``, i the target's index (from 0).
    """
    base = output_base(input_path, out, extension)
    if len(targets) * len(seeds) == 1:
        return [base]
    slugs = [slug(target) for target in targets]
    parts = [s if slugs.count(s) == 1 else f"{s}_t{i}" for i, s in enumerate(slugs)]
    return [base.with_name(f"{base.stem}_{part}_s{seed}{base.suffix}") for part in parts for seed in seeds]


def record_path(first_output: Path) -> Path:
    """The JSON record of a run: ``<first output stem>.json`` beside it."""
    return first_output.with_name(first_output.stem + ".json")


def check_outputs(paths: Sequence[Path], input_path: str | Sequence[str], overwrite: bool) -> None:
    """InputError if an output is an input, a folder, named twice, too long a name, exists (without
    overwrite), or cannot be written."""
    inputs = [input_path] if isinstance(input_path, (str, os.PathLike)) else list(input_path)
    sources = {Path(path).resolve() for path in inputs}
    seen: set[Path] = set()
    for path in paths:
        check_name_length(path)
        resolved = path.resolve()
        if resolved in sources:
            raise InputError(f"the output {path} is an input file: choose another --out")
        if resolved in seen:
            raise InputError(f"{path} would be written twice: choose other output names")
        seen.add(resolved)
        if path.is_dir():
            raise InputError(f"the output {path} is a folder: choose another --out")
        if path.exists() and not overwrite:
            raise InputError(f"{path} exists: pass --overwrite to replace it, or choose another --out")
        folder = path.parent
        if not folder.is_dir():
            raise InputError(f"output folder {folder} does not exist: create it or choose another --out")
        if not os.access(folder, os.W_OK):
            raise InputError(f"output folder {folder} is not writable: choose another --out")


def inversion_output(path: str | None, option: str = "--save-inversion") -> Path | None:
    """The file of --save-inversion (or another option naming a file to write; None when not
    given); InputError for a folder."""
    if path is None:
        return None
    check_name_length(path)
    if ends_with_separator(path) or Path(path).is_dir():
        raise InputError(f"{option} needs a file name, {path} is a folder: give e.g. {Path(path) / 'input.inversion'}")
    return Path(path)


# ---------------------------------------------------------------------------------------- inversion files


def load_inversion(args: argparse.Namespace) -> Inversion:
    """Read the --inversion file on the CPU; InputError (one line) if it is missing, a folder or not one.

    A null-text inversion was optimised for one guidance scale: without --cfg-tar the edit uses it,
    and --negative is refused (its optimised branch is the unconditional one).
    """
    from .inversion import Inversion

    file = Path(args.inversion)
    check_name_length(file)
    if not file.exists():
        raise InputError(f"inversion file not found: {file}; check the --inversion path")
    if file.is_dir():
        raise InputError(f"--inversion must name a file, {file} is a folder")
    inv = Inversion.load(file)
    if inv.settings.method == "null-text":
        if args.negative:
            raise InputError(f"{file} is a null-text inversion, whose optimised branch is the unconditional one: leave out --negative")
        if "cfg_tar" not in args.given:
            args.cfg_tar = inv.settings.cfg_src  # the scale its embeddings were optimised for
    return inv


def check_inversion_fits(inv: Inversion, expected: dict[str, Any], what: str, path: str) -> None:
    """InputError unless ``inv.meta`` has the ``expected`` input facts (e.g. the size of the input).

    Args:
        expected: meta key -> value of the input given now.
        what: how the message describes the facts ("size", "sample rate and length").
    """
    found = {key: inv.meta.get(key) for key in expected}
    if found != expected:
        made = ", ".join(f"{key} {value}" for key, value in found.items())
        now = ", ".join(f"{key} {value}" for key, value in expected.items())
        raise InputError(
            f"the inversion {path} was made from an input of another {what} ({made}, not {now}): "
            "give the input it was made from, or leave out --inversion"
        )


# ------------------------------------------------------------------------------------ the edit and its files


def _concepts(args: argparse.Namespace) -> list[Any]:
    """The ``Concept`` values of --add / --remove (``check_request`` checks them)."""
    from .methods.sega import Concept

    return [
        Concept(text, args.concept_scale, remove, args.threshold, args.warmup)
        for texts, remove in ((args.add, False), (args.remove, True))
        for text in texts
    ]


def name_targets(args: argparse.Namespace) -> list[str]:
    """The texts output files are named after: the targets, the concepts when there is none, or the
    (component, amount) pairs of a prompt-free edit."""
    if args.pc:
        return [f"pc{k} {'minus' if a < 0 else 'plus'} {abs(a):g}" for k in args.pc for a in (args.amount or [2.0])]
    if args.target:
        return list(args.target)
    return [" ".join([*(f"add {a}" for a in args.add), *(f"remove {r}" for r in args.remove)])]


def side_jobs(editor: Any, edited: Edited, inversion_file: Path | None, mask_file: Path | None,
              pcs_file: Path | None) -> list[tuple[Path, Writer]]:
    """The writers of the files a run keeps beside its outputs: --save-inversion, --save-mask, --save-pcs."""
    jobs: list[tuple[Path, Writer]] = []
    if inversion_file:
        jobs.append((inversion_file, edited.inversion.save))
    if mask_file:
        jobs.append((mask_file, lambda path: editor.save_mask(edited.mask, path, edited.inversion)))
    if pcs_file:
        jobs.append((pcs_file, edited.pcs.save))
    return jobs


def check_mask_file(args: argparse.Namespace, is_region: bool) -> None:
    """Before the model loads: a --mask that is neither auto nor a region must name a file."""
    if args.mask not in (None, "auto") and not is_region and not Path(args.mask).is_file():
        raise InputError(f"mask file not found: {args.mask} (give auto, a PNG file or a region; see --help)")


def mask_output(path: str | None) -> Path | None:
    """The file of --save-mask (None when not given), a .png."""
    if path is None:
        return None
    check_name_length(path)
    if Path(path).suffix.lower() != ".png":
        raise InputError(f"--save-mask writes a PNG picture: give a name ending in .png, not {path}")
    return Path(path)


# ---------------------------------------------------------------------------------------- the run record


def versions() -> dict[str, str]:
    """Versions of this package, torch, diffusers, transformers and python."""
    from importlib import metadata

    found = {"python": platform.python_version()}
    for package in ("ddpm-edit", "torch", "diffusers", "transformers"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def run_record(
    command: str,
    args: argparse.Namespace,
    editor: Any,
    settings: InversionSettings | None,
    paths: Sequence[Path],
    extra_files: dict[str, Path],
    seeds: Sequence[int] = (),
) -> dict[str, Any]:
    """Everything needed to repeat a run: settings, seeds, targets and their files, model, versions, device.

    Args:
        editor: the ``LatentEditor`` that made the edits (its model's device and dtype are recorded).
        settings: the inversion's settings (loaded from --inversion or made by this run); None for
            SDEdit, which inverts nothing (its settings come from ``args`` and ``seeds``).
        paths: the edited files, target-major as ``output_paths`` makes them.
        extra_files: other files written beside them (role -> path).
    """
    import torch

    if settings is None:
        from .inversion import InversionSettings

        settings = InversionSettings(
            editor.fingerprint(), args.steps, args.tstart, args.eta, 0.0, "", tuple(seeds), "sdedit"
        )
    seeds = list(settings.seeds)
    edits = [
        {"target": target, "target_index": i, "seed": seed, "file": paths[i * len(seeds) + j].name}
        for i, target in enumerate(name_targets(args))
        for j, seed in enumerate(seeds)
    ]
    return {
        "command": command,
        "input": str(Path(args.input).resolve()),
        "model": args.model,
        "model_fingerprint": settings.model,
        "settings": {
            "num_steps": settings.num_steps,
            "t_start": settings.t_start,
            "eta": settings.eta,
            "cfg_src": settings.cfg_src,
            "cfg_tar": args.cfg_tar,
            "source_prompt": settings.source_prompt,
            "negative_prompt": args.negative,
            "seeds": seeds,
            "inversion_batch": None if args.inversion or args.method == "sdedit" else editor.inversion_batch_size,  # None: no inversion ran
            "method": settings.method,
            "null_text": {"inner_steps": settings.inner_steps, "early_stop": settings.early_stop}
            if settings.method == "null-text" else None,
            "mask": args.mask,
            "principal_components": {"pc": args.pc, "amount": args.amount or [2.0], "at_step": args.pc_at,
                                     "iterations": args.pc_iterations, "region": args.region, "loaded_from": args.pcs}
            if args.pc else None,
        },
        "targets": list(args.target),
        "concepts": [dataclasses.asdict(c) for c in _concepts(args)],
        "outputs": edits,
        "files": {role: path.name for role, path in extra_files.items()},
        "inversion_loaded_from": str(Path(args.inversion).resolve()) if args.inversion else None,
        "inversion_saved_to": str(Path(args.save_inversion).resolve()) if args.save_inversion else None,
        "device": str(editor.model.device),
        "dtype": str(editor.model.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "versions": versions(),
    }


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Write ``value`` as indented UTF-8 JSON (non-ASCII text kept as is)."""
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


Writer = Callable[[Path], None]


def write_all(jobs: Sequence[tuple[Path, Writer]]) -> None:
    """Run ``write(temporary)`` for each (path, write) and put all files in place together, or none.

    An OSError while writing (disk full, say) becomes one InputError that names the file asked for.
    """
    try:
        with replacing(*(path for path, _ in jobs)) as temporaries:
            for temporary, (_, write) in zip(temporaries, jobs):
                try:
                    write(temporary)
                except OSError as error:
                    raise _write_error(final_path(temporary), error) from error
    except OSError as error:  # moving the files into place: os.replace names the target second
        raise _write_error(Path(error.filename2 or error.filename or jobs[0][0].parent), error) from error


def _write_error(path: Path, error: OSError) -> InputError:
    reason = " ".join(str(error.strerror or error).split())
    return InputError(f"cannot write {path}: {reason}; free some space or choose another --out")


# ------------------------------------------------------------------------------------------------ running


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
