"""The MedleyMDPrompts benchmark of the audio paper, end to end: manifest, edits, scores.

The benchmark edits the 34 MusicDelta excerpts of MedleyDB (``MusicDelta_<name>_MIX.wav``; MedleyDB
is distributed on request, so bring your own copy) with the captions published beside the paper's
code (``MedleyMDPrompts/captions_sources.csv`` and ``captions_targets.csv``):

- the sources file has columns ``filename`` and ``source_captions``: several descriptions of each
  excerpt, numbered from 1 in the order they appear for that file;
- the targets file has ``filename``, ``target_captions``, ``can_be_used_without_source`` (1: the
  target makes sense as an edit with an empty source prompt) and ``source_caption_index`` (the source
  description, from 1, the target was written against).

``--prompts with`` (the default) edits each target with the source description it was written
against; ``without`` edits the targets marked usable without a source with an empty source prompt;
``both`` does both. The script:

1. builds ``manifest.jsonl`` in ``--out``: one row per (excerpt, source prompt), its targets listed;
2. runs ``audio-edit batch`` on it (all batch options pass through: ``--model``, ``--steps``,
   ``--sweep tstart=50,75,100``, ``--eval``, ``--device``, ...), resumable like any batch;
3. with ``--eval``, prints the mean and 95 % interval of each metric per method and setting and
   writes them to ``summary.csv`` in ``--out``.

    python benchmarks/medley.py --audio MedleyDB/Audio --captions AudioEditingCode/MedleyMDPrompts --out medley
    python benchmarks/medley.py --audio ... --captions ... --out medley --sweep tstart=50,75,100 --eval
    accelerate launch -m benchmarks.medley --audio ... --captions ... --out medley   # several GPUs
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SOURCES = "captions_sources.csv"
TARGETS = "captions_targets.csv"
PROMPTS = ("with", "without", "both")


def read_captions(sources: Path, targets: Path) -> tuple[dict[str, list[str]], list[dict[str, Any]]]:
    """(file name -> its source descriptions in order, the target rows with their source index
    from 1 and whether they may go without a source)."""
    described: dict[str, list[str]] = defaultdict(list)
    with open(sources, newline="", encoding="utf-8-sig") as file:
        for row in csv.DictReader(file):
            described[row["filename"].strip()].append(row["source_captions"].strip())
    wanted = []
    with open(targets, newline="", encoding="utf-8-sig") as file:
        for number, row in enumerate(csv.DictReader(file), 1):
            name = row["filename"].strip()
            index = int(row["source_caption_index"])
            if not 1 <= index <= len(described[name]):
                raise ValueError(f"{targets.name} row {number}: {name} has no source caption {index}")
            wanted.append({
                "filename": name, "target": row["target_captions"].strip(), "source_index": index,
                "without_source": row["can_be_used_without_source"].strip() == "1",
            })  # fmt: skip
    return dict(described), wanted


def build_manifest(audio: Path, sources: Path, targets: Path, prompts: str = "with", limit: int | None = None) -> list[dict[str, Any]]:
    """The manifest rows of the benchmark: one per (excerpt, source prompt), with its targets, in the
    captions' order; ``limit`` keeps the first excerpts only. Raises FileNotFoundError naming the
    excerpts missing from ``audio``."""
    described, wanted = read_captions(sources, targets)
    names = list(dict.fromkeys(row["filename"] for row in wanted))[:limit]
    missing = [name for name in names if not (audio / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} excerpts are not in {audio}: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in wanted:
        if row["filename"] not in names:
            continue
        if prompts in ("with", "both"):
            grouped[row["filename"], described[row["filename"]][row["source_index"] - 1]].append(row["target"])
        if prompts in ("without", "both") and row["without_source"]:
            grouped[row["filename"], ""].append(row["target"])
    return [
        {"input": str((audio / name).resolve()), "source": source, "target": list(dict.fromkeys(texts))}
        for (name, source), texts in grouped.items()
    ]


def write_manifest(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Write ``rows`` as JSON Lines (targets as lists, so any character may be in them), through a
    temporary (processes launched together each write the same file)."""
    from image_core.files import replacing

    with replacing(path) as (temporary,):
        temporary.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def summarise(results: Path) -> list[dict[str, Any]]:
    """Per (method, setting, metric): count, mean and the half-width of its 95 % interval (normal
    approximation) over the outputs of ``results`` that were scored."""
    values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for line in results.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        for metric, value in (row.get("metrics") or {}).items():
            if value is not None and math.isfinite(value):
                values[row["method"], row["setting"], metric].append(float(value))
    table = []
    for (method, setting, metric), found in values.items():
        n = len(found)
        mean = sum(found) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in found) / (n - 1)) if n > 1 else 0.0
        table.append({"method": method, "setting": setting, "metric": metric, "n": n, "mean": mean, "ci95": 1.96 * sd / math.sqrt(n)})
    return table


def _print_table(table: Sequence[dict[str, Any]]) -> None:
    print(f"{'method':<10} {'setting':<28} {'metric':<12} {'n':>5} {'mean':>10} {'95% +-':>9}")
    for row in table:
        print(f"{row['method']:<10} {row['setting'] or '-':<28} {row['metric']:<12} {row['n']:>5} {row['mean']:>10.4f} {row['ci95']:>9.4f}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="MedleyMDPrompts end to end: manifest, audio-edit batch, scores. Other options go to audio-edit batch."
    )
    parser.add_argument("--audio", required=True, type=Path, help="the folder of the MusicDelta_*_MIX.wav excerpts")
    parser.add_argument("--captions", type=Path, default=None, help=f"the folder of {SOURCES} and {TARGETS}")
    parser.add_argument("--sources", type=Path, default=None, help=f"the sources file (default: --captions/{SOURCES})")
    parser.add_argument("--targets", type=Path, default=None, help=f"the targets file (default: --captions/{TARGETS})")
    parser.add_argument("--prompts", choices=PROMPTS, default="with",
                        help="edit with the source caption each target was written against, without a source, or both")  # fmt: skip
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N excerpts (a quick try)")
    parser.add_argument("--out", required=True, type=Path, help="the folder of the manifest, the edits, results.jsonl and summary.csv")
    args, batch_options = parser.parse_known_args(argv)
    if args.sources is None or args.targets is None:
        if args.captions is None:
            parser.error("give --captions, or both --sources and --targets")
        args.sources = args.sources or args.captions / SOURCES
        args.targets = args.targets or args.captions / TARGETS
    try:
        rows = build_manifest(args.audio, args.sources, args.targets, args.prompts, args.limit)
    except (OSError, ValueError, KeyError) as error:
        parser.exit(2, f"error: {error}\n")
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = args.out / "manifest.jsonl"
    write_manifest(rows, manifest)
    targets = sum(len(row["target"]) for row in rows)
    print(f"{len(rows)} rows, {targets} targets: {manifest}", file=sys.stderr)

    from audio_edit.cli import main as audio_edit

    try:
        audio_edit(["batch", str(manifest), "--out", str(args.out), *batch_options])
    except SystemExit as exited:
        if exited.code:
            raise
    results = args.out / "results.jsonl"
    if "--eval" in batch_options and results.is_file():
        from accelerate import PartialState

        if PartialState().is_main_process:
            table = summarise(results)
            with open(args.out / "summary.csv", "w", newline="", encoding="utf-8") as file:
                writer = csv.DictWriter(file, fieldnames=["method", "setting", "metric", "n", "mean", "ci95"])
                writer.writeheader()
                writer.writerows(table)
            _print_table(table)


if __name__ == "__main__":
    main()
