"""``audio-edit batch`` / ``image-edit batch``: many edits from a manifest with one model load.

A manifest (CSV or JSON Lines) has one row per input: ``input``, ``target`` (several joined by ``|``),
``source`` and any other option of the command by its long name (``tstart``, ``cfg-tar``, ``method``,
``seed``, ``num-outputs``, ``add``, ``mask``, ...). The command line's options are the defaults of every
row: a row is parsed exactly as the command line ``<its input> <command-line options> <row options>``
would be (a row's option replaces the command line's), so every option follows the same rules as in a
single edit. ``--sweep tstart=50,75,100 cfg-tar=3,6,12`` runs every row once per combination.

The run:

- checks every row (options, files, output names) before the model loads: a bad manifest is refused in
  one line naming its row, and nothing is written;
- loads the model once (once per process under ``accelerate launch``: rows are split between the
  processes, each on its own device, and the main process merges their results);
- inverts each input once per inversion setting and edits all its rows from that inversion;
- writes the outputs into one folder (each row's files all at once, through temporaries) and one line per
  output to ``results.jsonl`` (settings, seed, timings, path; a failing row's one-line error), appended and
  flushed line by line, then rewritten in manifest order at the end;
- resumes: a row already done with the same content (input, options, output names) whose outputs are
  all there is skipped; ``--overwrite`` runs every row again.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .files import json_object

RESULTS = "results.jsonl"
"""The results file in the output folder: one JSON object per output file."""

_PART = "results.part-{rank}.jsonl"  # a process's own results while several run (merged at the end)
_PART_GLOB = "results.part-*.jsonl"

ROW_ONLY_COLUMNS = ("input", "out")
"""Columns a row may have that are no defaults of the command line: its input, and its output's name
inside the batch's folder (``out``, optional: by default the name says the input, the row's settings,
the target and the seed)."""

PROCESS_OPTIONS = ("model", "device", "dtype", "threads", "compile", "inversion-batch")
"""Options that are the same for every row (one model per process): command line only."""

NOT_IN_BATCH = ("inversion", "save-inversion", "save-mask", "save-pcs", "save-attention", "spectrogram", "help")
"""Options a batch run does not take (it reuses inversions itself and writes only the edits)."""

NOT_SETTINGS = ("input", "out", "target", "source", "add", "remove", "method", "seed", "num-outputs")
"""Row options that the ``setting`` label of a result leaves out (the result has fields for them)."""

_EXECUTION = ("given", "threads", "device", "compile", "inversion_batch", "overwrite", "out")
"""Parsed values that do not change what a row makes (left out of the row's content key)."""

_SETTING_SLUG_BYTES = 60  # longest settings part of an output name before it is shortened with a hash


@dataclass(frozen=True)
class Command:
    """What a batch needs of one command line (``audio-edit``, ``image-edit``).

    Attributes:
        name: the command's name, e.g. "audio-edit".
        modality: "audio" or "image" (for the scorer of ``--eval``).
        extension: the outputs' default extension, e.g. ".wav".
        parser: makes the command's argument parser (``cli_common.edit_parser`` and its own options).
        read: parsed arguments -> ``Prepared`` (the input read and checked, the request).
        load_editor: (parsed arguments, device, **editor options) -> the editor.
        check_output: (prepared edit, path) -> None; InputError if an edit cannot be written there.
        write_output: (prepared edit, one output, path) -> None; writes it.
    """

    name: str
    modality: str
    extension: str
    parser: Callable[[], Any]
    read: Callable[[argparse.Namespace], Any]
    load_editor: Callable[..., Any]
    check_output: Callable[[Any, Path], None]
    write_output: Callable[[Any, Any, Path], None]


@dataclass
class Job:
    """One row of the manifest (one combination of the sweep), checked.

    Attributes:
        row: the manifest row, from 1.
        variant: the combination of ``--sweep`` values, from 0 (0 without a sweep).
        args: the row's parsed arguments (as ``parse_arguments`` gives them).
        argv: the command line the row stands for (its input last).
        setting: the row's own settings, e.g. "tstart=100 cfg-tar=12" ("" for none).
        paths: its output files, target-major (``name_targets`` x seeds).
        names: the target (or concepts, or component move) of each output, target-major.
        seeds: the seeds of the outputs.
        key: a digest of the row's content (input, options, outputs): what a rerun matches done rows by.
        group: the inversion it edits (input and inversion settings); None for SDEdit.
    """

    row: int
    variant: int
    args: argparse.Namespace
    argv: list[str]
    setting: str
    paths: list[Path]
    names: list[str]
    seeds: list[int]
    key: str
    group: tuple[Any, ...] | None = None


# ------------------------------------------------------------------------------------------- arguments


def batch_parser(command: Command) -> Any:
    """The command's parser with the batch's own options: MANIFEST in place of INPUT, ``--out DIR``,
    ``--overwrite`` (run done rows again), ``--sweep``, ``--eval`` and ``--clap-model``."""
    parser = command.parser()
    parser.prog = f"{command.name} batch"
    parser.description = (
        f"Run many {command.name} edits from a manifest (CSV or JSON Lines: columns input, target (several joined "
        f"by |), source and any option below by its long name), with one model load. The options given here are "
        f"the defaults of every row."
    )
    own = {
        "input": ("MANIFEST", "the manifest: a .csv or .jsonl file, one row per input"),
        "out": ("DIR", "the folder of the outputs and results.jsonl (default: <manifest stem>_edits beside the manifest)"),
        "overwrite": (None, "run every row again, even those done in an earlier run"),
    }
    for action in parser._actions:  # the single edit's input, --out and --overwrite mean the batch's here
        if action.dest in own:
            action.metavar, action.help = own[action.dest]
    parser.add_argument("--sweep", nargs="+", default=[], metavar="OPTION=V1,V2",
                        help="run every row once per combination of these values, e.g. --sweep tstart=50,75,100 cfg-tar=3,6,12")  # fmt: skip
    parser.add_argument("--eval", action="store_true", help="score each output as it is written (the evaluation package's metrics)")
    parser.add_argument("--clap-model", default=None, metavar="ID|PATH|tiny", help="the CLAP model of --eval (default: the evaluation's)")
    return parser


_BATCH_DESTS = ("out", "overwrite", "sweep", "eval", "clap_model", "input")
_UNSET = object()


@dataclass
class Options:
    """The batch command line: its own options and the edit options every row starts from."""

    manifest: Path
    out: Path
    overwrite: bool
    sweep: list[tuple[str, list[str]]]
    eval: bool
    clap_model: str | None
    defaults: dict[str, list[str]]  # long name -> its tokens, as the command line gave them
    process: argparse.Namespace  # the command line's values of the process options (model, device, ...)


def parse_batch(command: Command, argv: Sequence[str]) -> Options:
    """The batch's command line; InputError (one line) for what a batch cannot take."""
    parser = _raising(batch_parser(command))
    actions = [action for action in parser._actions if action.dest != "help"]
    unset = {action.dest: None if _repeatable(action) else _UNSET for action in actions}  # None: appended to
    args = parser.parse_args(list(argv), namespace=argparse.Namespace(**unset))
    dests = list(unset)
    given = {dest for dest in dests if getattr(args, dest) is not unset[dest]}
    for dest in set(dests) - given:
        setattr(args, dest, parser.get_default(dest))
    options = _long_names(command.parser())
    defaults: dict[str, list[str]] = {}
    for name, action in options.items():
        if action.dest in given and action.dest not in _BATCH_DESTS:
            if name in NOT_IN_BATCH:
                raise InputError(f"--{name} is not available in a batch run: each input is inverted once and only the edits are written")
            defaults[name] = _tokens(name, action, getattr(args, action.dest))
    if args.threads is not None:  # checked here: rows do not give it
        from .cli_common import MAX_THREADS

        if not 1 <= args.threads <= MAX_THREADS:
            raise InputError(f"--threads must be between 1 and {MAX_THREADS}, got {args.threads}")
    if args.inversion_batch is not None and args.inversion_batch < 1:
        raise InputError(f"--inversion-batch must be a positive integer, got {args.inversion_batch}")
    manifest = Path(args.input)
    out = Path(args.out) if args.out is not None else manifest.with_name(f"{manifest.stem}_edits")
    sweep = [_sweep_item(text, options) for text in args.sweep]
    return Options(manifest, out, args.overwrite, sweep, args.eval, args.clap_model, defaults, args)


def _raising(parser: Any) -> Any:
    """``parser`` whose errors raise InputError (one line) instead of exiting."""

    def error(message: str) -> None:
        raise InputError(message)

    parser.error = error
    return parser


def _long_names(parser: Any) -> dict[str, argparse.Action]:
    """Long option name (without ``--``) -> its action, in the parser's order."""
    return {s[2:]: action for action in parser._actions for s in action.option_strings if s.startswith("--")}


def _tokens(name: str, action: argparse.Action, value: Any) -> list[str]:
    """The command-line tokens that give ``value`` to option ``--name`` (``--name=value`` form, so
    values starting with a dash stay values)."""
    if action.nargs == 0:
        return [f"--{name}"] if value else []
    if isinstance(value, list):
        return [f"--{name}={item}" for item in value]
    return [] if value is None else [f"--{name}={value}"]


def _sweep_item(text: str, options: dict[str, argparse.Action]) -> tuple[str, list[str]]:
    """("cfg-tar", ["3", "6", "12"]) of "cfg-tar=3,6,12"."""
    name, sep, values = text.partition("=")
    name = name.strip().replace("_", "-")
    items = [value.strip() for value in values.split(",")]
    if not sep or not name or not all(items):
        raise InputError(f"--sweep takes OPTION=V1,V2,... (e.g. tstart=50,75,100), got {text!r}")
    if name not in options or name in ROW_ONLY_COLUMNS or name in PROCESS_OPTIONS or name in NOT_IN_BATCH:
        raise InputError(f"--sweep {text!r}: {name!r} is no option a row can set")
    if options[name].nargs == 0:
        raise InputError(f"--sweep {text!r}: --{name} is a switch, not an option with values")
    return name, items


# -------------------------------------------------------------------------------------------- manifests


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """The rows of a CSV (header row, then one row per input; empty cells are not given) or JSON Lines
    manifest (one object per line; blank lines and lines starting with # skipped); InputError naming
    the row for a malformed one."""
    if not path.is_file():
        raise InputError(f"manifest not found: {path}")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the manifest {path}: {error}") from None
    if suffix in (".jsonl", ".ndjson", ".json"):
        rows = _json_rows(text)
    elif suffix in (".csv", ".tsv"):
        rows = _csv_rows(text, "\t" if suffix == ".tsv" else ",")
    else:
        raise InputError(f"the manifest {path.name} must be a .csv or .jsonl file")
    if not rows:
        raise InputError(f"the manifest {path} has no rows")
    return rows


def _json_rows(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [json_object(line, f"row {number}") for number, line in enumerate(lines, 1)]


def _csv_rows(text: str, delimiter: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    rows = []
    for number, row in enumerate(reader, 1):
        if None in row:
            raise InputError(f"row {number}: more cells than the header has columns")
        rows.append({(key or "").strip(): value for key, value in row.items() if value is not None and value.strip() != ""})
    return rows


# ----------------------------------------------------------------------------------------------- rows


def plan_jobs(command: Command, options: Options, rows: Sequence[dict[str, Any]]) -> list[Job]:
    """Every row (and sweep combination) parsed and checked, with its outputs; InputError naming the
    row for the first bad one (the model is not loaded yet and nothing has been written)."""
    from .cli_common import parse_arguments

    parser = _raising(command.parser())
    names = _long_names(parser)
    combos = [dict(zip([name for name, _ in options.sweep], values)) for values in itertools.product(*(v for _, v in options.sweep))]
    jobs: list[Job] = []
    owners: dict[Path, tuple[int, int]] = {}
    for number, row in enumerate(rows, 1):
        cells = _row_cells(row, names, number)
        for variant, combo in enumerate(combos):
            own = {**cells, **{name: [value] if _repeatable(names[name]) else value for name, value in combo.items()}}
            tokens = {**options.defaults, **{name: _cell_tokens(name, names[name], value) for name, value in own.items() if name != "input"}}
            argv = [token for name in names if name in tokens for token in tokens[name]]
            argv += ["--", str(own["input"])]
            try:
                args = parse_arguments(parser, argv)
                job = _job(command, options, number, variant, args, argv, own, names)
            except InputError as error:
                raise InputError(f"row {number}: {error}") from None
            for path in job.paths:
                resolved = path.resolve()
                if resolved in owners:
                    other = owners[resolved][0]
                    where = "the same row" if other == number else f"row {other}"
                    raise InputError(
                        f"row {number}: its output {path.name} is also {where}'s: give the rows different settings or an out column"
                    )
                owners[resolved] = (number, variant)
            jobs.append(job)
    inputs = {Path(job.args.input).resolve() for job in jobs}
    for job in jobs:
        if any(path.resolve() in inputs for path in job.paths):
            raise InputError(f"row {job.row}: its output {job.paths[0].name} is an input file: choose another --out")
    return jobs


def _row_cells(row: dict[str, Any], names: dict[str, argparse.Action], number: int) -> dict[str, Any]:
    """A row's cells by option long name, checked: an input, no unknown or per-process options."""
    cells: dict[str, Any] = {}
    for column, value in row.items():
        name = str(column).strip().replace("_", "-")
        if value is None or (isinstance(value, str) and not value.strip()) or value == []:
            continue
        if name not in names and name != "input":
            raise InputError(f"row {number}: unknown option {column!r}: columns are input, target, source and the long names of the options (see --help)")
        if name in PROCESS_OPTIONS:
            raise InputError(f"row {number}: --{name} is one for all rows (one model per run): give it on the command line")
        if name in NOT_IN_BATCH or name == "overwrite":
            raise InputError(f"row {number}: --{name} is not available in a batch run")
        cells[name] = value
    if "input" not in cells:
        raise InputError(f"row {number}: no input: every row names the file to edit in its input column")
    if not isinstance(cells["input"], str):
        raise InputError(f"row {number}: the input is a file name, got {cells['input']!r}")
    if not Path(cells["input"]).is_file():
        raise InputError(f"row {number}: input file not found: {cells['input']}")
    return cells


def _cell_tokens(name: str, action: argparse.Action, value: Any) -> list[str]:
    """The tokens of one cell: a switch from a truthy value, several values of a repeatable option
    from a list or a text joined by ``|``, one value otherwise."""
    if action.nargs == 0:
        on = value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")
        return [f"--{name}"] if on else []
    if _repeatable(action):
        items = value if isinstance(value, list) else str(value).split("|")
        return [f"--{name}={_text(item).strip()}" for item in items]
    return [f"--{name}={_text(value)}"]


def _repeatable(action: argparse.Action) -> bool:
    """Whether an option may be given several times (--target, --add, --pc, ...)."""
    return isinstance(action, argparse._AppendAction)


def _text(value: Any) -> str:
    """A cell's value as typed (JSON numbers as Python writes them)."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _setting(own: dict[str, Any], names: dict[str, argparse.Action]) -> str:
    """The row's own settings as "name=value" pairs in the options' order (lists joined by |)."""
    parts = []
    for name in names:
        if name in own and name not in NOT_SETTINGS:
            value = own[name]
            if names[name].nargs == 0:
                parts.append(name)
            else:
                parts.append(f"{name}={'|'.join(_text(v) for v in value) if isinstance(value, list) else _text(value)}")
    return " ".join(parts)


def _job(
    command: Command, options: Options, number: int, variant: int, args: argparse.Namespace, argv: list[str],
    own: dict[str, Any], names: dict[str, argparse.Action],
) -> Job:  # fmt: skip
    """The job of one parsed row: its outputs' names, content key and inversion group."""
    from .cli_outputs import name_targets, output_paths
    from .files import check_name_length
    from .request import INVERSION_METHODS

    setting = _setting(own, names)
    seeds = list(range(args.seed, args.seed + args.num_outputs))
    targets = name_targets(args)
    if args.out is not None:
        if Path(args.out).name != args.out or args.out in (".", ".."):
            raise InputError(f"out names a file inside the batch's folder, not a path: {args.out!r}")
        paths = output_paths(args.input, str(options.out / args.out), targets, seeds, command.extension)
    else:
        paths = _default_paths(args.input, options.out, setting, targets, seeds, command.extension)
    for path in paths:
        check_name_length(path)
    content = {key: value for key, value in sorted(vars(args).items()) if key not in _EXECUTION}
    content.update(command=command.name, input=str(Path(args.input).resolve()), outputs=[path.name for path in paths])
    key = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:20]
    group = None
    if args.method in INVERSION_METHODS:
        cfg = args.cfg_tar if args.method == "null-text" else args.cfg_src
        tuning = (args.inner_steps, args.early_stop) if args.method == "null-text" else ()
        group = (content["input"], args.method, args.source, args.steps, args.tstart, cfg, args.eta, tuple(seeds), getattr(args, "lyrics", None), *tuning)
    return Job(number, variant, args, argv, setting, paths, targets, seeds, key, group)


def _default_paths(input_path: str, folder: Path, setting: str, targets: Sequence[str], seeds: Sequence[int], extension: str) -> list[Path]:
    """``<input stem>[_<settings>]_<target>_s<seed><extension>`` in ``folder``, target-major; targets
    whose names coincide get ``_t<i>`` as in a single edit."""
    from .cli_outputs import slug

    stem = Path(input_path).stem
    if setting:
        part = slug(setting, 4 * _SETTING_SLUG_BYTES)
        if len(part.encode()) > _SETTING_SLUG_BYTES:
            part = f"{slug(setting, _SETTING_SLUG_BYTES - 9)}-{hashlib.sha256(setting.encode()).hexdigest()[:8]}"
        stem = f"{stem}_{part}"
    slugs = [slug(target) for target in targets]
    parts = [s if slugs.count(s) == 1 else f"{s}_t{i}" for i, s in enumerate(slugs)]
    return [folder / f"{stem}_{part}_s{seed}{extension}" for part in parts for seed in seeds]


# -------------------------------------------------------------------------------------------- results


def read_results(folder: Path) -> list[dict[str, Any]]:
    """The result lines in ``folder`` (``results.jsonl``, then any process's partial results, in that
    order); a line cut short by a killed run is skipped."""
    found: list[dict[str, Any]] = []
    for path in [folder / RESULTS, *sorted(folder.glob(_PART_GLOB))]:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict) and "key" in value:
                found.append(value)
    return found


def _latest(lines: Iterable[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The last line of each (row content, output index)."""
    return {(line["key"], line.get("index")): line for line in lines}


def is_done(job: Job, latest: dict[tuple[Any, ...], dict[str, Any]]) -> bool:
    """Whether every output of ``job`` has a "done" line of the same row content and is on disk."""
    for index, path in enumerate(job.paths):
        line = latest.get((job.key, index))
        if line is None or line.get("status") != "done" or not path.is_file():
            return False
    return True


class ResultsFile:
    """Result lines appended to one file: each line one write of the whole line, flushed to disk, after
    a newline if the file ends with a line cut short."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        if os.fstat(self.fd).st_size > 0:
            with open(path, "rb") as file:
                file.seek(-1, os.SEEK_END)
                if file.read(1) != b"\n":
                    os.write(self.fd, b"\n")

    def append(self, lines: Iterable[dict[str, Any]]) -> None:
        for line in lines:
            os.write(self.fd, (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"))
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def merge_results(folder: Path, jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """Rewrite ``results.jsonl`` (through a temporary) with the latest line of every output of
    ``jobs``, in manifest order, row numbers as in this manifest; partial results merged and removed.
    Lines of rows no longer in the manifest are dropped (their files stay)."""
    from .files import replacing

    latest = _latest(read_results(folder))
    merged = []
    for job in jobs:
        for index in range(len(job.paths)):
            line = latest.get((job.key, index))
            if line is not None:
                merged.append({**line, "row": job.row, "variant": job.variant})
    with replacing(folder / RESULTS) as (temporary,):
        temporary.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in merged), encoding="utf-8")
    for part in folder.glob(_PART_GLOB):
        part.unlink(missing_ok=True)
    return merged


# -------------------------------------------------------------------------------------------- running


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings a result line records (every option that changes the edit)."""
    left_out = (*_EXECUTION, "input", "target", "inversion", "save_inversion", "save_mask", "save_pcs", "save_attention", "spectrogram")
    return {key: value for key, value in sorted(vars(args).items()) if key not in left_out}


def _lines(job: Job, seconds: float, error: str | None = None, **extra: Any) -> list[dict[str, Any]]:
    """One result line per output of ``job``: "done", or "failed" with the one-line ``error``."""
    args = job.args
    lines = []
    for index, path in enumerate(job.paths):
        lines.append({
            "row": job.row, "variant": job.variant, "index": index, "input": str(Path(args.input).resolve()),
            "output": None if error else str(path.resolve()), "target": job.names[index // len(job.seeds)],
            "target_index": index // len(job.seeds), "source": args.source, "method": args.method,
            "setting": job.setting, "status": "failed" if error else "done", "error": error,
            "seed": job.seeds[index % len(job.seeds)], "seconds": round(seconds, 4), **extra,
            "settings": _settings(args), "argv": job.argv, "key": job.key,
        })  # fmt: skip
    return lines


class Runner:
    """Runs jobs with one editor, keeping the last inversion for the next job of the same group."""

    def __init__(self, command: Command, editor: Any, scorer: Any = None, process: int = 0) -> None:
        self.command, self.editor, self.scorer, self.process = command, editor, scorer, process
        self.group: tuple[Any, ...] | None = None
        self.inversion: Any = None
        self.inversions = 0  # inversions made

    def run(self, job: Job) -> list[dict[str, Any]]:
        """The result lines of ``job`` after running it; a failure becomes "failed" lines with the error."""
        start = time.perf_counter()
        try:
            timings = self._edit(job)
        except KeyboardInterrupt:
            raise
        except Exception as error:  # noqa: BLE001 (a failing row is recorded and the run goes on)
            text = str(error).splitlines()[0] if str(error).strip() else type(error).__name__
            message = text if _user_error(error) else f"{type(error).__name__}: {text}"
            return _lines(job, time.perf_counter() - start, message, process=self.process)
        reused = timings.pop("reused")
        lines = _lines(job, time.perf_counter() - start, timings=timings, inversion_reused=reused, process=self.process)
        if self.scorer is not None:
            for line in lines:
                try:
                    line["metrics"] = {name: float(value) for name, value in self.scorer.score(dict(line)).items()}
                except Exception as error:  # noqa: BLE001 (a scoring error is recorded, the edit is kept)
                    line["metrics"], line["eval_error"] = None, str(error).splitlines()[0] if str(error) else type(error).__name__
        return lines

    def _edit(self, job: Job) -> dict[str, Any]:
        from .files import replacing
        from .runner import Stages, run_request

        marks: list[tuple[str, float]] = [("read", time.perf_counter())]
        edit = self.command.read(job.args)
        for path in job.paths:
            self.command.check_output(edit, path)
        reuse = job.group is not None and job.group == self.group

        def keep(inversion: Any) -> Any:  # kept for the group's next rows even if this row fails later
            self.group, self.inversion = job.group, inversion
            self.inversions += 1
            return inversion

        stages = Stages(starting=lambda stage: marks.append((stage, time.perf_counter())), inverted=keep)
        edited = run_request(self.editor, edit.request, edit.item, self.inversion if reuse else None, stages=stages)
        marks.append(("write", time.perf_counter()))
        with replacing(*job.paths) as temporaries:
            for temporary, output in zip(temporaries, edited.outputs):
                self.command.write_output(edit, output, temporary)
        marks.append(("end", time.perf_counter()))
        timings = {stage: round(marks[i + 1][1] - at, 4) for i, (stage, at) in enumerate(marks[:-1])}
        return {**timings, "reused": reuse}


def _user_error(error: BaseException) -> bool:
    from .errors import EditError

    return isinstance(error, EditError)


def _state(requested: str) -> Any:
    """accelerate's ``PartialState`` of this process: the processes of ``accelerate launch`` (or
    torchrun) share the rows, on CPUs too (over gloo) where the command asks for the CPU or the
    machine has no GPU; one process alone otherwise."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()))


def _device(requested: str, state: Any) -> str:
    """The device of this process: under ``accelerate launch`` the process's own (cuda:N), unless the
    command line chose another kind; else the one asked for."""
    if state.num_processes > 1 and requested in ("auto", state.device.type):
        return str(state.device)
    return requested


def run_batch(command: Command, argv: Sequence[str]) -> None:
    """``<command> batch MANIFEST [options]``: check the manifest, load the model, run the rows not
    done yet (this process's share of them under ``accelerate launch``) and merge the results."""
    from .cli_common import set_threads

    options = parse_batch(command, argv)
    rows = read_manifest(options.manifest)
    jobs = plan_jobs(command, options, rows)
    score = _scorer_factory(options, command)
    if options.out.exists() and not options.out.is_dir():
        raise InputError(f"--out {options.out} is a file: give a folder")
    state = _state(options.process.device)
    set_threads(options.process.threads)
    try:
        options.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create the output folder {options.out}: {error.strerror or error}") from None
    latest = {} if options.overwrite else _latest(read_results(options.out))
    todo = [job for job in jobs if not is_done(job, latest)]
    state.wait_for_everyone()  # every process has read the results before any writes
    groups = _grouped(todo)
    with state.split_between_processes(groups) as share:
        mine = [job for group in share for job in group]
    if mine:
        device = _device(options.process.device, state)
        editor = command.load_editor(options.process, device, progress=False)
        runner = Runner(command, editor, score(device) if score else None, state.process_index)
        name = RESULTS if state.num_processes == 1 else _PART.format(rank=state.process_index)
        results = ResultsFile(options.out / name)
        try:
            _run_jobs(runner, mine, results, show=state.is_main_process, label=_label(command, state))
        finally:
            results.close()
    state.wait_for_everyone()
    if state.is_main_process:
        merged = merge_results(options.out, jobs)
        done = sum(1 for job in jobs if is_done(job, _latest(merged)))
        failed = len({(line["row"], line["variant"]) for line in merged if line.get("status") == "failed"})
        skipped = len(jobs) - len(todo)
        print(f"{done} of {len(jobs)} rows done ({skipped} already before this run), {failed} failed: {options.out / RESULTS}")
        if failed:
            print(f"warning: {failed} rows failed: their errors are in {options.out / RESULTS}", file=sys.stderr)


def _label(command: Command, state: Any) -> str:
    return command.name if state.num_processes == 1 else f"{command.name} (process 1 of {state.num_processes})"


def _grouped(jobs: Sequence[Job]) -> list[list[Job]]:
    """Jobs grouped by the inversion they edit (in order of first appearance; SDEdit jobs alone)."""
    groups: dict[Any, list[Job]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(job.group if job.group is not None else ("alone", i), []).append(job)
    return list(groups.values())


def _run_jobs(runner: Runner, jobs: Sequence[Job], results: ResultsFile, *, show: bool, label: str) -> int:
    """Run ``jobs`` in order with a progress bar, appending each one's lines; the count of failed jobs."""
    from .progress import Progress

    failed = 0
    with Progress(total=len(jobs), desc=label, unit="row", disable=not show) as bar:
        for job in jobs:
            lines = runner.run(job)
            results.append(lines)
            failed += lines[0]["status"] == "failed"
            bar.set_postfix(failed=failed, refresh=False)
            bar.update(1)
    return failed


def _scorer_factory(options: Options, command: Command) -> Callable[[str], Any] | None:
    """With --eval, a function of the device making the evaluation's scorer (checked importable now,
    before the model loads); None without it."""
    if not options.eval:
        if options.clap_model is not None:
            raise InputError("--clap-model chooses the model of --eval: give --eval too, or leave it out")
        return None
    try:
        from .evaluation import Scorer
    except ImportError as error:
        raise InputError(f"--eval needs the evaluation package ({error}): install the [eval] extra") from None

    def create(device: str) -> Any:
        return Scorer.create(command.modality, options.clap_model, device)

    return create
