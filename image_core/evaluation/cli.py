"""``audio-edit-eval`` and ``image-edit-eval``: score edits, print and save a table per method and
setting, and draw the trade-off figure."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import cli_common
from ..errors import InputError
from .results import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, RESULTS_NAME, Rows, folder_rows, read_results

if TYPE_CHECKING:
    from .scorer import AudioScorer
    from .table import Group, Line

CSV_NAME = "evaluation.csv"

_AUDIO_HELP = (
    "Score audio edits: CLAP similarity of each edit to its target text, LPAPS between edit and input, "
    "CQT-1 PCC (melody kept), and optionally FAD of each method/setting's edits to a reference set; prints a "
    "table of means with 95% Student-t intervals per method and setting, writes it as CSV, and with --plot "
    "draws CLAP against LPAPS. Give a batch run's results.jsonl (or its folder), or --outputs and --inputs folders."
)
_IMAGE_HELP = (
    "Score image edits: CLIP score of each edit to its target text and LPIPS between edit and input; prints a "
    "table of means with 95% Student-t intervals per method and setting, writes it as CSV, and with --plot "
    "draws CLIP score against LPIPS. Give a batch run's results.jsonl (or its folder), or --outputs and --inputs folders."
)
_CLAP_HELP = (
    "CLAP checkpoint: hub id, local folder, or tiny (random weights, offline, meaningless scores). The default "
    "is the transformers port of LAION-CLAP's music_audioset_epoch_15_esc_90.14, the checkpoint the audio paper "
    "scored CLAP and LPAPS with (laion/larger_clap_music_and_speech ports another one, trained with speech too)"
)


def _parser(modality: str) -> cli_common.Parser:
    audio = modality == "audio"
    p = cli_common.Parser(
        prog=f"{modality}-edit-eval", description=_AUDIO_HELP if audio else _IMAGE_HELP,
        formatter_class=cli_common._HelpFormatter,
    )  # fmt: skip
    p.add_argument("results", nargs="?", default=None, metavar="RESULTS",
                   help=f"a batch run's {RESULTS_NAME}, or the folder holding it")  # fmt: skip
    p.add_argument("--outputs", action="append", default=[], metavar="DIR",
                   help="folder of edits, instead of RESULTS; repeat for several methods (the folder's name is the method)")  # fmt: skip
    p.add_argument("--inputs", default=None, metavar="DIR",
                   help="with --outputs: the folder of the edited inputs (an edit's name starts with its input's name and _)")  # fmt: skip
    p.add_argument("--target", default=None, metavar="TEXT", help="with --outputs: the target text of every edit")
    p.add_argument("--targets", default=None, metavar="FILE.csv",
                   help="with --outputs: a CSV with columns output (file name) and target, one line per edit")  # fmt: skip
    if audio:
        p.add_argument("--clap-model", default=None, metavar="ID|PATH|tiny", help=_CLAP_HELP + " (default: laion/larger_clap_music)")
        p.add_argument("--lpaps-norm", default="tokens", choices=["tokens", "channels"],
                       help="LPAPS feature normalisation: tokens (each channel over the tokens, as the audio paper's "
                       "published evaluation computes it) or channels (each token's channel vector, LPIPS' convention)")  # fmt: skip
        p.add_argument("--reference", default=None, metavar="DIR|inputs",
                       help="also compute FAD (Fréchet distance of CLAP embeddings, one per 10 s window) of each "
                       "method/setting's edits to the recordings in DIR, or to the edited inputs")  # fmt: skip
    else:
        p.add_argument("--clip-model", default=None, metavar="ID|PATH|tiny",
                       help="CLIP checkpoint: hub id, local folder, or tiny (random weights, offline; LPIPS then uses a "
                       "random stand-in too) (default: openai/clip-vit-large-patch14, torchmetrics' CLIPScore default)")  # fmt: skip
        p.add_argument("--lpips-net", default=None, choices=["alex", "vgg", "squeeze", "none"],
                       help="LPIPS backbone (torchmetrics; needs torchvision and its ImageNet weights), none to skip "
                       "LPIPS (default: alex, tiny with --clip-model tiny)")  # fmt: skip
    p.add_argument("--csv", default=None, metavar="FILE.csv",
                   help=f"where to write the table (default: {CSV_NAME} beside RESULTS, or in the first --outputs folder)")  # fmt: skip
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help=f"also draw the trade-off figure: {'CLAP against LPAPS' if audio else 'CLIP score against LPIPS'}, "
                   "one curve per method, points labelled by setting")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing table or figure")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="where the models run")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads torch may use (default: torch's choice)")
    return p


def _rows(args: argparse.Namespace, extensions: tuple[str, ...]) -> Rows:
    """The rows to score, checked before any model loads."""
    if (args.results is None) == (not args.outputs):
        raise InputError("give either a results file (or its folder) or --outputs folders with --inputs")
    if args.results is not None:
        if args.inputs or args.target or args.targets:
            raise InputError("--inputs, --target and --targets go with --outputs; a results file names its inputs and targets")
        return read_results(args.results)
    if args.inputs is None:
        raise InputError("--outputs needs --inputs, the folder of the edited inputs")
    return folder_rows(args.outputs, args.inputs, extensions, args.target, args.targets)


def _destinations(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """(table CSV, figure PNG or None); InputError when one exists without --overwrite."""
    if args.csv is not None:
        table = Path(args.csv)
    elif args.results is not None:
        results = Path(args.results)
        table = (results if results.is_dir() else results.parent) / CSV_NAME
    else:
        table = Path(args.outputs[0]) / CSV_NAME
    figure = Path(args.plot) if args.plot else None
    if figure is not None and figure.suffix.lower() != ".png":
        raise InputError(f"--plot must name a .png file, got {figure}")
    for path in [table, *([figure] if figure else [])]:
        if path.is_dir():
            raise InputError(f"{path} is a folder; give a file name")
        if not path.parent.is_dir():
            raise InputError(f"folder not found for {path}")
        if path.exists() and not args.overwrite:
            raise InputError(f"{path} exists: pass --overwrite to replace it, or choose another name")
    return table, figure


def _reference(args: argparse.Namespace) -> list[Path] | str | None:
    """The FAD reference: "inputs", the recordings of a folder, or None."""
    name = getattr(args, "reference", None)
    if name is None or name == "inputs":
        return name
    folder = Path(name)
    if not folder.is_dir():
        raise InputError(f"reference folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if len(files) < 1:
        raise InputError(f"no audio files in the reference folder {folder}")
    return files


def _check_files(rows: Rows, reference: list[Path] | str | None, audio: bool) -> None:
    """Refuse, before any model loads, a file that cannot be read (corrupt, empty, not audio / a picture)."""
    from .audio import check_audio
    from .images import check_image

    files = {path for row in rows.rows for path in (row.input, row.output)}
    files |= set(reference) if isinstance(reference, list) else set()
    for path in sorted(files):
        (check_audio if audio else check_image)(path)


def _main(modality: str, argv: Sequence[str]) -> None:
    from tqdm import tqdm

    from .scorer import AudioScorer, Scorer
    from .table import make_table, text_table, write_csv

    args = _parser(modality).parse_args(argv)
    audio = modality == "audio"
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be a positive integer, got {args.threads}")
    rows = _rows(args, AUDIO_EXTENSIONS if audio else IMAGE_EXTENSIONS)
    table_path, figure_path = _destinations(args)
    reference = _reference(args) if audio else None
    _check_files(rows, reference, audio)
    cli_common.set_threads(args.threads)
    if audio:
        scorer = Scorer.create("audio", args.clap_model, args.device, lpaps_normalization=args.lpaps_norm)
    else:
        scorer = Scorer.create("image", args.clip_model, args.device, lpips_net=args.lpips_net)
    scores: list[tuple[Group, dict[str, float]]] = []
    embeddings: dict[Group, list[np.ndarray]] = {}
    for row in tqdm(rows.rows, desc="scoring", unit="edit", file=sys.stderr, disable=None):
        scored = scorer.score_row(row)
        scores.append(((row.method, row.setting), scored.metrics))
        embeddings.setdefault((row.method, row.setting), []).append(scored.embeddings)
    lines = make_table(scores, scorer.metrics, dict(rows.failed))
    if reference is not None and isinstance(scorer, AudioScorer):
        _add_fad(lines, embeddings, scorer, reference, rows)
    print(text_table(lines, scorer.metrics), end="")
    write_csv(lines, scorer.metrics, table_path)
    if figure_path is not None:
        from .plot import plot_tradeoff

        x, y = ("lpaps", "clap") if audio else ("lpips", "clip")
        if y not in scorer.metrics or x not in scorer.metrics:
            raise InputError(f"--plot needs both {x} and {y}")
        plot_tradeoff(lines, x, y, figure_path)
    print(f"wrote {table_path}" + (f" and {figure_path}" if figure_path else ""), file=sys.stderr)


def _add_fad(
    lines: list[Line], embeddings: dict[Group, list[np.ndarray]], scorer: AudioScorer, reference: list[Path] | str, rows: Rows
) -> None:
    """Set each line's FAD to the reference set: Fréchet distance of the Gaussian fits of the CLAP
    embeddings of all windows of the line's edits and of the reference recordings (lines with fewer
    than 2 windows keep None)."""
    from .frechet import fit_gaussian, frechet_distance

    files = sorted({row.input for row in rows.rows}) if reference == "inputs" else reference
    ref = np.concatenate([scorer.embeddings_of(path) for path in files])
    if ref.shape[0] < 2:
        raise InputError(f"FAD needs at least 2 reference windows, the reference set has {ref.shape[0]}")
    fit = fit_gaussian(ref)
    for line in lines:
        windows = embeddings.get((line.method, line.setting))
        if windows and sum(len(w) for w in windows) >= 2:
            own = fit_gaussian(np.concatenate(windows))
            line.fad = frechet_distance(own.mean, own.covariance, fit.mean, fit.covariance)


def audio_main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``audio-edit-eval``."""
    cli_common.run(lambda: _main("audio", argv if argv is not None else sys.argv[1:]))


def image_main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``image-edit-eval``."""
    cli_common.run(lambda: _main("image", argv if argv is not None else sys.argv[1:]))
