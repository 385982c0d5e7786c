"""What the image and audio command-line tools share: arguments, the request they make, inversion
files and error handling (the files a run writes: ``cli_outputs``, whose names are re-exported)."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import EditError, InputError
from .cli_outputs import (  # noqa: F401 (the command lines' names for them)
    SLUG_BYTES, Writer, attention_job, concepts_of, check_outputs, ends_with_separator, inversion_output, mask_output, name_targets,
    output_base, output_paths, record_path, run_record, side_jobs, slug, versions, write_all, write_json, write_run,
)
from .files import check_name_length
from .p2p import P2POptions
from .request import FIXED_BY_INVERSION, METHODS, P2P_ONLY, TRACKED, EditRequest, MaskChoice, PCOptions, Region, check_request

if TYPE_CHECKING:
    from .batch import Command
    from .inversion import Inversion

MAX_THREADS = 1024
"""Largest --threads accepted (far above any machine's cores; guards against typos)."""

_UNSET = object()  # marks an option the command line did not give


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (and exit code 2). ``model_defaults``, when a
    command sets it, gives the settings a model has its own defaults for (a parsed namespace in,
    changed in place) before the arguments are checked."""

    model_defaults: Callable[[argparse.Namespace], None] | None = None

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults in --help, except None, "" and [] (such options say in words what happens
    without them)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        quiet = action.default is None or action.default == "" or action.default == []
        return action.help if quiet else super()._get_help_string(action)


def edit_parser(
    prog: str, description: str, *, model: str, steps: int, t_start: int, cfg_src: float, cfg_tar: float, region: str,
    tiny: str = "tiny",
) -> Parser:
    """The arguments both editors take, with the given paper defaults; ``region`` tells how --mask
    writes a region of this kind of input."""
    p = Parser(prog=prog, description=description, formatter_class=_HelpFormatter)
    p.add_argument("input", help="the file to edit (never modified)")
    p.add_argument("--target", action="append", metavar="TEXT", help="target prompt; repeat for several edits (optional with --add/--remove)")
    p.add_argument("--source", default="", metavar="TEXT", help="source prompt describing the input (default: none)")
    p.add_argument("--negative", default="", metavar="TEXT",
                   help="negative prompt of the edit, the unconditional branch (default: none, as the models were trained)")  # fmt: skip
    p.add_argument("--model", default=model, metavar="ID|PATH|tiny", help=f"hub id, local folder, or a random test model: {tiny}")
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
        "sdedit: noise to --tstart and sample the target (baseline, nothing inverted); flowedit: FlowEdit, the "
        "difference of the target's and the source's steps from --tstart on (nothing inverted; one model call per step)",
    )  # fmt: skip
    p.add_argument("--n-min", type=int, default=0, metavar="N",
                   help="flowedit: the last N steps sample the target plainly (the paper's 0)")  # fmt: skip
    p.add_argument("--n-avg", type=int, default=1, metavar="N",
                   help="flowedit: noise draws averaged per step, all in one model call (the paper's 1)")  # fmt: skip
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
    p.add_argument(
        "--p2p", default=None, choices=("replace", "refine"),
        help="Prompt-to-Prompt: the targets attend with the source's attention for the first steps (with --method ddpm, "
        "ddim or null-text). replace: a word swap (prompts of equal token length); refine: words added or changed",
    )  # fmt: skip
    p.add_argument("--cross-steps", type=float, default=None, metavar="F",
                   help="--p2p: fraction of the steps with cross-attention injected (default: ddpm 0.6, ddim and null-text 0.8)")  # fmt: skip
    p.add_argument("--self-steps", type=float, default=None, metavar="F",
                   help="--p2p: fraction of the steps with self-attention injected (default: ddpm 0.2, ddim 0.4, null-text 0.5)")  # fmt: skip
    p.add_argument("--reweight", action="append", default=[], metavar="WORD=FACTOR",
                   help="--p2p: scale the attention to a word of the target prompt (e.g. jazz=2); repeatable")  # fmt: skip
    p.add_argument("--blend", nargs="+", default=[], metavar="WORD",
                   help="--p2p: change only where these words are attended to (local blend); the rest of the input is kept")  # fmt: skip
    p.add_argument("--save-attention", default=None, metavar="FILE.png",
                   help="--p2p: also draw each token's attention over the input, averaged over layers and steps")  # fmt: skip
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
        help="(x_t, t) rows per model call during inversion (default: as many as fit half a GPU's free memory, 16 on a CPU); fewer use less memory, "
        "and 1 makes reconstruction bitwise identical to the inversion's own model calls, which matters with float16",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=int, default=None, metavar="N",
        help="CPU threads torch may use (default: torch's own choice, usually all cores); lower it on shared machines",
    )  # fmt: skip
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet: faster steps on a GPU after a compile of a minute or so per shape")  # fmt: skip
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="where the model runs; auto: cuda when there is one, then mps, else cpu")  # fmt: skip
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"], help="auto: bfloat16 on cuda where supported (float16 on older GPUs), else float32")
    return p


def parse_arguments(parser: Parser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv`` and refuse, in one line, any value no edit can run with (before anything loads):
    ``check_request`` of the request the arguments make, then what only the command line has.

    The namespace gets ``given``: the dests of ``FIXED_BY_INVERSION`` and ``TRACKED`` the command line
    set explicitly; ``target`` is a list (empty without --target).
    """
    tracked = [*FIXED_BY_INVERSION, *TRACKED]
    unset = argparse.Namespace(**{dest: _UNSET for dest in tracked})
    args = parser.parse_args(argv, namespace=unset)
    args.given = {dest for dest in tracked if getattr(args, dest) is not _UNSET}
    for dest in set(tracked) - args.given:
        setattr(args, dest, parser.get_default(dest))
    args.target = args.target or []
    if parser.model_defaults is not None:
        parser.model_defaults(args)
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
    p2p_given = {name for name in P2P_ONLY if getattr(args, name, None) not in (None, [])}
    p2p = None
    if getattr(args, "p2p", None) is not None:
        p2p = P2POptions(args.p2p, args.cross_steps, args.self_steps, reweights(args.reweight), tuple(args.blend))
    return EditRequest(
        method=args.method, source=args.source, targets=tuple(args.target), negative=args.negative,
        steps=args.steps, tstart=args.tstart, cfg_src=args.cfg_src, cfg_tar=args.cfg_tar, eta=args.eta,
        seed=args.seed, num_outputs=args.num_outputs, concepts=tuple(concepts_of(args)), mask=mask, pcs=pcs,
        inner_steps=args.inner_steps, early_stop=args.early_stop, inversion_loaded=args.inversion is not None,
        save_inversion=args.save_inversion is not None, given=frozenset(getattr(args, "given", ())) | p2p_given,
        p2p=p2p, save_attention=getattr(args, "save_attention", None) is not None, n_min=args.n_min, n_avg=args.n_avg,
        lyrics=getattr(args, "lyrics", None) or "",
    )  # fmt: skip


def reweights(texts: Sequence[str]) -> dict[str, float]:
    """--reweight WORD=FACTOR values as a dict; InputError for one that is not WORD=number."""
    found = {}
    for text in texts:
        word, sep, factor = text.partition("=")
        try:
            found[word.strip()] = float(factor)
        except ValueError:
            sep = ""
        if not sep or not word.strip():
            raise InputError(f"--reweight takes WORD=FACTOR, e.g. --reweight jazz=2, got {text!r}")
    return found


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
    options: dict[str, Any] = {} if args.inversion_batch is None else {"inversion_batch_size": args.inversion_batch}
    return {**options, "compile": True} if args.compile else options


def set_threads(threads: int | None) -> None:
    """Let torch use ``threads`` CPU threads (None: leave torch's own choice)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


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
    """InputError unless ``inv.meta`` has the ``expected`` input facts (e.g. the size of the input);
    a file without them at all was made by another model or modality (an audio inversion given to the
    image editor), which the message says.

    Args:
        expected: meta key -> value of the input given now.
        what: how the message describes the facts ("size", "sample rate and length").
    """
    if any(key not in inv.meta for key in expected):
        raise InputError(_made_elsewhere(inv, expected, what, path))
    found = {key: inv.meta.get(key) for key in expected}
    if found != expected:
        made = ", ".join(f"{key} {value}" for key, value in found.items())
        now = ", ".join(f"{key} {value}" for key, value in expected.items())
        raise InputError(
            f"the inversion {path} was made from an input of another {what} ({made}, not {now}): "
            "give the input it was made from, or leave out --inversion"
        )


_IMAGE_FACTS = frozenset({"size"})
_AUDIO_FACTS = frozenset({"sample_rate", "num_frames", "model_samples"})
_AGAIN = {"image": "invert the picture again", "audio": "invert the recording again"}


def _modality(keys: Any, model: str = "") -> str | None:
    """"image" or "audio": what kind of input the facts ``keys`` (else the model fingerprint) belong to."""
    if _IMAGE_FACTS & set(keys):
        return "image"
    if _AUDIO_FACTS & set(keys):
        return "audio"
    if model.startswith("stable-diffusion"):
        return "image"
    return "audio" if model.startswith("audioldm") else None


def _made_elsewhere(inv: Inversion, expected: dict[str, Any], what: str, path: str) -> str:
    """One line for an inversion whose meta lacks the input facts this command expects: it was made
    by a model of another modality (an audio inversion given to the image editor, say)."""
    made, now = _modality(inv.meta, inv.settings.model), _modality(expected)
    again = _AGAIN.get(now or "", "invert the input again")
    if made is not None and now is not None and made != now:
        return (
            f"the inversion {path} was made by an {made} model, not this {now} model (not from an input of "
            f"another {what}): {again} without --inversion"
        )
    return (
        f"the inversion {path} records no {what} of the input it was made from (another model or tool made it): "
        f"{again} without --inversion"
    )


def check_mask_file(args: argparse.Namespace, is_region: bool) -> None:
    """Before the model loads: a --mask that is neither auto nor a region must name a file."""
    if args.mask not in (None, "auto") and not is_region and not Path(args.mask).is_file():
        raise InputError(f"mask file not found: {args.mask} (give auto, a PNG file or a region; see --help)")


# ------------------------------------------------------------------------------------------------ running


def quiet_hub_logging() -> None:
    """Keep the hub client's retry warnings off stderr (an offline load then fails in one line;
    download progress bars are not affected)."""
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()


def run_command(command: Command, edit: Callable[[Sequence[str]], None], argv: Sequence[str]) -> None:
    """Run a command line as ``run`` does: ``edit(argv)``, or ``command``'s batch run when ``argv``
    starts with "batch" (``image-edit batch MANIFEST ...``)."""

    def main() -> None:
        if argv and argv[0] == "batch":
            from .batch import run_batch

            run_batch(command, argv[1:])
        else:
            edit(argv)

    run(main)


def run(main: Callable[[], None]) -> None:
    """Run a command: user errors as one line on stderr with exit code 2, Ctrl-C as exit code 130;
    warnings as one line each ("warning: ..."), each said once."""
    quiet_hub_logging()
    said: set[str] = set()

    def one_line(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        text = str(message).splitlines()[0] if str(message) else category.__name__
        if text not in said:
            said.add(text)
            print(f"warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = one_line
        try:
            main()
        except EditError as error:
            print(f"error: {str(error).splitlines()[0] if str(error) else type(error).__name__}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
