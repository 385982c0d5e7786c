"""The files a command-line run writes: output names, their checks, the run record, and writing
them all at once or none."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError
from .files import check_name_length, final_path, name_limit, replacing

if TYPE_CHECKING:
    from .inversion import Inversion, InversionSettings
    from .request import EditRequest
    from .runner import Edited

SLUG_BYTES = 40
"""Longest prompt part of an output name, in UTF-8 bytes (keeps names far below the usual 255-byte limit)."""


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
    """The JSON record of a run: ``<first output's full name>.json`` beside it (``h.flac.json``), so
    every set of outputs has its own; where that name would be too long for the folder, the output's
    stem is shortened in it (never its extension)."""
    room = name_limit(first_output.parent) - len(os.fsencode(first_output.suffix + ".json"))
    stem = os.fsencode(first_output.stem)[:room].decode("utf-8", errors="ignore") if room > 0 else "record"
    return first_output.with_name(f"{stem}{first_output.suffix}.json")


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
        if not _writable(folder):
            raise InputError(f"output folder {folder} is not writable: choose another --out")


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder``: tried (permissions alone do not tell, e.g. for root
    or in /proc), the trial file removed at once."""
    import tempfile

    if not os.access(folder, os.W_OK):
        return False
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".~probe"):
            return True
    except OSError:
        return False


def inversion_output(path: str | None, option: str = "--save-inversion") -> Path | None:
    """The file of --save-inversion (or another option naming a file to write; None when not
    given); InputError for a folder."""
    if path is None:
        return None
    check_name_length(path)
    if ends_with_separator(path) or Path(path).is_dir():
        raise InputError(f"{option} needs a file name, {path} is a folder: give e.g. {Path(path) / 'input.inversion'}")
    return Path(path)


def mask_output(path: str | None, option: str = "--save-mask") -> Path | None:
    """The file of --save-mask or --save-attention (None when not given), a .png."""
    if path is None:
        return None
    check_name_length(path)
    if Path(path).suffix.lower() != ".png":
        raise InputError(f"{option} writes a PNG picture: give a name ending in .png, not {path}")
    return Path(path)


def attention_job(args: argparse.Namespace, editor: Any, edited: Edited) -> dict[str, tuple[Path, Writer]]:
    """The --save-attention picture's (path, writer) by role, or nothing."""
    path = mask_output(args.save_attention, "--save-attention")
    if path is None or edited.attention is None:
        return {}
    return {"attention": (path, lambda file: editor.draw_attention(edited.attention, edited.inversion, file))}


# ------------------------------------------------------------------------------------ the edit and its files


@dataclasses.dataclass
class Prepared:
    """One edit of a command line, checked and read, before the model loads: what ``run_request``
    needs and what writing its outputs needs.

    Attributes:
        args: the parsed command line (``parse_arguments``).
        item: the input the editor reads (an ``Audio`` clip, a picture).
        request: the edit, its regions parsed against the input.
        loaded: the inversion of --inversion, checked to fit the input; None without it.
        seeds: the seeds of the outputs (the loaded inversion's, or seed .. seed + num_outputs - 1).
    """

    args: argparse.Namespace
    item: Any
    request: EditRequest
    loaded: Inversion | None
    seeds: list[int]



def concepts_of(args: argparse.Namespace) -> list[Any]:
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
    pcs: Any = None,
    rows: int | None = None,
) -> dict[str, Any]:
    """Everything needed to repeat a run: settings, seeds, targets and their files, model, versions, device.

    Args:
        editor: the ``LatentEditor`` that made the edits (its model's device and dtype are recorded).
        settings: the inversion's settings (loaded from --inversion or made by this run); None for
            SDEdit, which inverts nothing (its settings come from ``args`` and ``seeds``).
        paths: the edited files, target-major as ``output_paths`` makes them.
        extra_files: every other file written beside them (role -> path), the record itself aside.
        pcs: the ``PosteriorPCs`` a prompt-free edit moved along (found now or loaded): the record
            says how they were made, not what the command line would have asked for.
        rows: the (x_t, t) rows per model call the inversion ran with (``editor.inversion_rows``).
    """
    import torch

    if settings is None:
        from .inversion import InversionSettings

        settings = InversionSettings(
            editor.fingerprint(), args.steps, args.tstart, args.eta, args.cfg_src if args.method == "flowedit" else 0.0,
            args.source if args.method == "flowedit" else "", tuple(seeds), args.method,
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
            "inversion_batch": None if args.inversion or args.method in ("sdedit", "flowedit") else rows,  # None: no inversion ran
            "method": settings.method,
            "null_text": {"inner_steps": settings.inner_steps, "early_stop": settings.early_stop}
            if settings.method == "null-text" else None,
            "mask": args.mask,
            "principal_components": _components_record(args, pcs) if args.pc else None,
            "prompt_to_prompt": _p2p_record(args, settings.method) if getattr(args, "p2p", None) else None,
            "flowedit": {"n_max": args.tstart, "n_min": args.n_min, "n_avg": args.n_avg} if args.method == "flowedit" else None,
            **({"lyrics": editor.model.lyrics, "target_lyrics": getattr(args, "target_lyrics", None)} if hasattr(editor.model, "lyrics") else {}),
        },
        "targets": list(args.target),
        "concepts": [dataclasses.asdict(c) for c in concepts_of(args)],
        "outputs": edits,
        "files": {role: path.name for role, path in extra_files.items()},
        "inversion_loaded_from": str(Path(args.inversion).resolve()) if args.inversion else None,
        "inversion_saved_to": str(Path(args.save_inversion).resolve()) if args.save_inversion else None,
        "device": str(editor.model.device),
        "dtype": str(editor.model.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "versions": versions(),
    }


def _p2p_record(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """The Prompt-to-Prompt settings of the run, its defaults filled in."""
    from .p2p import DEFAULTS

    cross, self_, start = DEFAULTS[method]
    return {
        "mode": args.p2p, "cross_steps": cross if args.cross_steps is None else args.cross_steps,
        "self_steps": self_ if args.self_steps is None else args.self_steps, "reweight": list(args.reweight),
        "blend": list(args.blend), "blend_start": start if args.blend else None,
    }  # fmt: skip


def _components_record(args: argparse.Namespace, pcs: Any) -> dict[str, Any]:
    """How the components moved along were made (``pcs.info``, recorded when they were found), which
    of them moved and by how much."""
    info = pcs.info if pcs is not None else {}
    return {
        "pc": args.pc, "amount": args.amount or [2.0], "at_step": pcs.step if pcs is not None else args.pc_at,
        "count": pcs.count if pcs is not None else None, "iterations": info.get("iterations"),
        "max_iterations": info.get("max_iterations"), "region": info.get("region"), "loaded_from": args.pcs,
    }


def write_run(
    command: str,
    args: argparse.Namespace,
    editor: Any,
    edited: Edited,
    seeds: Sequence[int],
    outputs: Sequence[tuple[Path, Writer]],
    extra: dict[str, tuple[Path, Writer]],
    side: tuple[Path | None, Path | None, Path | None],
) -> None:
    """Write a run's outputs, its other files and its record, all or none, then print every file
    written but the record (the outputs first).

    Args:
        outputs: (path, writer) of each edit, target-major (``output_paths``).
        extra: role -> (path, writer) of the command's own other files (the spectrogram picture).
        side: the files of --save-inversion, --save-mask and --save-pcs (None where not asked for).
    """
    inversion_file, mask_file, pcs_file = side
    paths = [path for path, _ in outputs]
    files = {role: path for role, (path, _) in extra.items()}
    files.update({role: path for role, path in (("mask", mask_file), ("inversion", inversion_file), ("pcs", pcs_file)) if path})
    inv = edited.inversion
    rows = None if inv is None else editor.inversion_rows(inv.x0)
    facts = run_record(command, args, editor, inv and inv.settings, paths, files, seeds, edited.pcs, rows)
    jobs = [*outputs, *extra.values(), (record_path(paths[0]), lambda path: write_json(path, facts))]
    write_all([*jobs, *side_jobs(editor, edited, inversion_file, mask_file, pcs_file)])
    for path in [*paths, *files.values()]:
        print(path)


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
