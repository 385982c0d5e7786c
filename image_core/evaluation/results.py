"""The rows to score: a batch run's ``results.jsonl``, or folders of edits beside their inputs.

A ``results.jsonl`` holds one JSON object per line with at least:

- ``"input"``: path of the input file; ``"output"``: path of the edit (absent or null when it failed);
- ``"target"``: the target text of this output (absent, null or "" for edits without one);
- ``"method"``: e.g. "ddpm", "sdedit"; ``"setting"``: a short name of the settings, e.g. "tstart=100 cfg-tar=12";
- ``"status"``: "done" or "failed".

Relative paths are looked up beside the results file first, then from the current folder.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files import json_object

RESULTS_NAME = "results.jsonl"
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".aiff", ".aif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Row:
    """One edit to score.

    Attributes:
        input: the file that was edited.
        output: the edit.
        target: the text the edit aims at (None: no text metric for this row).
        method: the editing method (a curve of the trade-off plot).
        setting: the settings' short name (a point of that curve; "" when there is one).
        where: where the row came from, for messages ("results.jsonl line 3", "out/x.wav").
    """

    input: Path
    output: Path
    target: str | None
    method: str
    setting: str
    where: str


@dataclass
class Rows:
    """The rows to score and how many rows of each (method, setting) failed in the run."""

    rows: list[Row]
    failed: Counter[tuple[str, str]] = field(default_factory=Counter)


def row_from_dict(record: dict[str, Any], base: Path | None = None, where: str = "row") -> Row:
    """The :class:`Row` of one results.jsonl object with status "done"; InputError (one line) when a
    field is missing or a file does not exist."""
    for key in ("input", "output", "method"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise InputError(f"{where}: missing or empty {key!r} (a finished row needs input, output and method)")
    target = record.get("target")
    if target is not None and not isinstance(target, str):
        raise InputError(f"{where}: 'target' must be a string, got {type(target).__name__}")
    if target and "|" in target:
        raise InputError(f"{where}: target {target!r} holds several texts joined by '|'; a row scores one output against one target")
    setting = record.get("setting")
    return Row(
        input=_existing(record["input"], base, "input", where),
        output=_existing(record["output"], base, "output", where),
        target=target.strip() or None if target else None,
        method=record["method"],
        setting="" if setting is None else str(setting),
        where=where,
    )


def read_results(path: str | Path) -> Rows:
    """The finished rows of a results.jsonl (or of the one in folder ``path``), checked before any model
    loads: InputError (one line) for a missing or malformed file, a missing input or output, or no
    finished row."""
    file = Path(path)
    if file.is_dir():
        if not (file / RESULTS_NAME).is_file():
            raise InputError(f"no {RESULTS_NAME} in folder {file}: give a results file, or --outputs and --inputs folders")
        file = file / RESULTS_NAME
    if not file.is_file():
        raise InputError(f"results file not found: {file}")
    rows, failed = [], Counter()
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read results file {file}: {error}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{file.name} line {number}"
        record = json_object(line, where)
        status = record.get("status", "done" if record.get("output") else "failed")
        if status != "done":
            failed[(str(record.get("method", "")), str(record.get("setting") or ""))] += 1
            continue
        rows.append(row_from_dict(record, file.parent, where))
    if not rows:
        raise InputError(f"no finished rows in {file} ({sum(failed.values())} failed)")
    return Rows(rows, failed)


def folder_rows(
    outputs: Sequence[str | Path],
    inputs: str | Path,
    extensions: Sequence[str],
    target: str | None = None,
    targets_file: str | Path | None = None,
) -> Rows:
    """Rows for the edits in each ``outputs`` folder (its name is the method), each paired with the file
    of ``inputs`` whose name without extension starts its name (``melody_edit_s0.wav`` -> ``melody.flac``;
    the longest such name wins). Targets come from ``targets_file`` (CSV with columns ``output`` (file
    name) and ``target``), else ``target`` for every edit, else none."""
    source = _folder(inputs, "inputs")
    candidates = sorted((p for p in _files(source, extensions)), key=lambda p: -len(p.stem))
    if not candidates:
        raise InputError(f"no {' / '.join(extensions)} files in the inputs folder {source}")
    texts = _targets(targets_file) if targets_file is not None else {}
    rows = []
    for folder in map(lambda f: _folder(f, "outputs"), outputs):
        edits = [p for p in _files(folder, extensions) if p.resolve() not in {c.resolve() for c in candidates}]
        if not edits:
            raise InputError(f"no {' / '.join(extensions)} files in the outputs folder {folder}")
        for edit in edits:
            match = next((c for c in candidates if edit.stem == c.stem or edit.stem.startswith(c.stem + "_")), None)
            if match is None:
                raise InputError(f"no file in {source} matches the edit {edit} (an edit's name starts with its input's name and _)")
            text = texts.get(edit.name, target)
            rows.append(Row(input=match, output=edit, target=text or None, method=folder.name, setting="", where=str(edit)))
    return Rows(rows)


def _existing(name: str, base: Path | None, what: str, where: str) -> Path:
    path = Path(name).expanduser()
    if not path.is_absolute() and base is not None and (base / path).is_file():
        return base / path
    if not path.is_file():
        raise InputError(f"{where}: {what} file not found: {name}")
    return path


def _folder(path: str | Path, what: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"{what} folder not found: {folder}")
    return folder


def _files(folder: Path, extensions: Sequence[str]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions)


def _targets(path: str | Path) -> dict[str, str]:
    """output file name -> target text, from a CSV with columns ``output`` and ``target``."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"targets file not found: {file}")
    with file.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"output", "target"} <= set(reader.fieldnames):
            raise InputError(f"targets file {file} needs the columns output and target, got {reader.fieldnames}")
        return {Path(r["output"]).name: (r["target"] or "").strip() for r in reader}
