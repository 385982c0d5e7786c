"""One edit, as a value: :class:`EditRequest` holds everything an edit needs (method, prompts,
settings, seeds, concepts, mask, prompt-free components), and :func:`check_request` refuses, in one
line, every combination no edit can run with, before anything is loaded.

The rules are the same for every frontend; :class:`Frontend` says how one frontend words them and
its bounds (the defaults are the command line's, ``image-edit`` and ``audio-edit``; the demo page
has its own). ``image_core.runner.run_request`` runs a checked request with an editor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .errors import InputError
from .methods.flowedit import MAX_AVG, N_AVG, N_MIN
from .methods.null_text import EARLY_STOP, INNER_STEPS, LEARNING_RATE, check_null_text_settings
from .methods.pcs import AMOUNT, MAX_ITERATIONS
from .methods.sega import Concept, check_concepts
from .p2p import P2POptions
from .settings import check_settings, consecutive_seeds

if TYPE_CHECKING:
    import torch  # noqa: F401 (named in Region)

    from .inversion import Inversion  # noqa: F401 (named in Region)

Method = Literal["ddpm", "ddim", "null-text", "sdedit", "flowedit"]

METHODS: tuple[str, ...] = ("ddpm", "ddim", "null-text", "sdedit", "flowedit")
"""Edit-friendly DDPM inversion (the default), DDIM inversion, null-text inversion, SDEdit and FlowEdit
(nothing inverted)."""

INVERSION_METHODS: tuple[str, ...] = ("ddpm", "ddim", "null-text")
"""The methods that invert the input (and so allow a mask, concepts and principal components)."""

TRACKED: tuple[str, ...] = ("cfg_tar", "negative", "concept_scale", "threshold", "warmup", "pc_at", "pc_iterations", "n_min", "n_avg")
P2P_ONLY: tuple[str, ...] = ("cross_steps", "self_steps", "reweight", "blend", "save_attention")
"""The options of a Prompt-to-Prompt edit (named in :attr:`EditRequest.given` when set): refused without it."""
"""Settings besides ``FIXED_BY_INVERSION`` whose being given matters (:attr:`EditRequest.given`): an
option given where it cannot act is refused."""

FIXED_BY_INVERSION: tuple[str, ...] = (
    "steps", "tstart", "cfg_src", "eta", "seed", "num_outputs", "source", "method", "inner_steps", "early_stop", "lyrics",
)
"""The settings an inversion loaded from a file fixes (names as in :attr:`EditRequest.given`)."""

Region = Mapping[str, tuple[float, float]] | Sequence[float] | Callable[["Inversion"], "torch.Tensor"] | str
"""A part of the input: keyword arguments of the editor's ``region_mask`` (audio: ``{"seconds": (2.0,
4.5), "hz": (200, 2000)}``), its positional argument (images: a box ``[x0, y0, x1, y1]`` in pixels), a
function of the inversion giving the (1, 1, ...) mask, or the text the user typed, not parsed yet
(enough for :func:`check_request`; :func:`~image_core.runner.run_request` needs it parsed)."""


@dataclass(frozen=True)
class MaskChoice:
    """Where an edit may change the input (the rest is kept exactly); at most one of ``auto``, ``file``
    and ``region``, none for an edit of the whole input.

    Attributes:
        auto: DiffEdit: where the target and source descriptions disagree (one target; CLI ``--mask auto``).
        file: a mask picture, white = edit (CLI ``--mask FILE.png``, e.g. from ``--save-mask``).
        region: a part of the input (CLI ``--mask 2.0:4.5s,200:2000Hz`` / ``--mask x0,y0,x1,y1``).
        seed: the seed of DiffEdit's noise draws (the command line: 0, the editor's default; the demo
            page: its run's first seed).
        save: the mask is also written as a picture (CLI ``--save-mask``).
    """

    auto: bool = False
    file: str | None = None
    region: Region | None = None
    seed: int = 0
    save: bool = False

    @property
    def given(self) -> bool:
        """Whether the edit is limited to a mask."""
        return self.auto or self.file is not None or self.region is not None


@dataclass(frozen=True)
class PCOptions:
    """A prompt-free edit: the input moved along principal components of the posterior (Manor &
    Michaeli, ICML 2024); no components, no such edit.

    Attributes:
        components: the components to move along, from 1 (CLI ``--pc``, repeatable).
        amounts: standard deviations to move by (CLI ``--amount``); empty: ``AMOUNT`` (2, the audio
            paper's evaluation), see :attr:`moves`.
        count: components to find; None: the largest of ``components`` (the command line's choice;
            the demo page finds a number of its own and moves along one).
        at_step: the step of the edit whose posterior gives them, 0 (the default) = its first (CLI ``--pc-at``).
        iterations: at most this many subspace iterations (default ``MAX_ITERATIONS``, 50: the
            official code's count; CLI ``--pc-iterations``).
        region: limit the components to this part of the input (CLI ``--region``, ``--band``).
        file: use the components saved in this file instead of finding them (CLI ``--pcs``).
        save: the components are also written to a file (CLI ``--save-pcs``).
    """

    components: tuple[int, ...] = ()
    amounts: tuple[float, ...] = ()
    count: int | None = None
    at_step: int = 0
    iterations: int = MAX_ITERATIONS
    region: Region | None = None
    file: str | None = None
    save: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "components", tuple(self.components))
        object.__setattr__(self, "amounts", tuple(self.amounts))

    @property
    def moves(self) -> tuple[float, ...]:
        """The amounts to move by: ``amounts``, or ``AMOUNT`` alone when none are given."""
        return self.amounts or (AMOUNT,)

    @property
    def found(self) -> int:
        """How many components to find: ``count``, or the largest of ``components``."""
        return self.count if self.count is not None else max(self.components, default=0)


@dataclass(frozen=True, kw_only=True)
class EditRequest:
    """Everything one edit needs. ``steps``, ``tstart``, ``cfg_src`` and ``cfg_tar`` have no default
    here: each frontend gives its paper's (audio: 200, 100, 3 and 12, ``audio_edit.defaults``, the
    audio paper's, which ``AudioEditor``, ``audio-edit`` and the demo use; images: 100, 64, 3.5 and
    15, ``image_core.stable_diffusion.codec.DEFAULTS``, the image paper's, which ``ImageEditor``
    and ``image-edit`` use).

    Attributes:
        method: "ddpm" (edit-friendly DDPM inversion, the default), "ddim", "null-text" or "sdedit".
        source: the description of the input ("" by default).
        targets: the target prompts, one edit each (may be empty with ``concepts``: the source is kept).
        negative: the negative prompt of the edit, the unconditional branch ("" by default).
        steps: N, the diffusion steps of the full chain.
        tstart: the steps the edit runs (higher: a stronger edit, less of the input kept).
        cfg_src: the source prompt's guidance scale during inversion (not null-text's: see ``cfg_tar``).
        cfg_tar: the target prompts' guidance scale; null-text inversion is optimised for it.
        eta: sampler noise in (0, 1]; 1 (the default) is DDPM.
        seed, num_outputs: the seeds ``seed .. seed + num_outputs - 1`` (0 and 1 by default), one
            inversion (or SDEdit sample) each.
        concepts: LEDITS semantic guidance, ``Concept`` values to add or remove (none by default).
        mask: where the edit may change the input (:class:`MaskChoice`; the whole input by default).
        pcs: a prompt-free edit along principal components (:class:`PCOptions`; none by default).
        inner_steps, early_stop: null-text inversion's Adam steps per step and early stop (the
            paper's 10 and 1e-5, ``methods.null_text.INNER_STEPS`` / ``EARLY_STOP``).
        p2p: a Prompt-to-Prompt edit (attention control, :class:`~image_core.p2p.P2POptions`; CLI
            ``--p2p``); None for a plain edit.
        save_attention: the P2P edit's word maps are also drawn (CLI ``--save-attention``).
        lyrics: what the recording sings, for a model conditioned on lyrics (ACE-Step; CLI
            ``--lyrics``); "" (the default) is instrumental. An inversion keeps the lyrics it was made with.
        n_min, n_avg: FlowEdit's last steps sampled plainly and noise draws per step (its paper's 0
            and 1); ``tstart`` is its n_max.
        inversion_loaded: the edit uses an inversion loaded from a file (CLI ``--inversion``), whose
            settings are its own: those in ``given`` are refused.
        save_inversion: the inversion is also written to a file (CLI ``--save-inversion``).
        given: the settings the user set explicitly, by name (those of ``FIXED_BY_INVERSION``, where
            "seed" and "num_outputs" stand for the seeds, and of ``TRACKED``); the others hold
            defaults. An option given where it cannot act is refused.
    """

    method: str = "ddpm"
    source: str = ""
    targets: tuple[str, ...] = ()
    negative: str = ""
    steps: int
    tstart: int
    cfg_src: float
    cfg_tar: float
    eta: float = 1.0
    seed: int = 0
    num_outputs: int = 1
    concepts: tuple[Concept, ...] = ()
    mask: MaskChoice = field(default_factory=MaskChoice)
    pcs: PCOptions = field(default_factory=PCOptions)
    inner_steps: int = INNER_STEPS
    early_stop: float = EARLY_STOP
    p2p: P2POptions | None = None
    save_attention: bool = False
    lyrics: str = ""
    n_min: int = N_MIN
    n_avg: int = N_AVG
    inversion_loaded: bool = False
    save_inversion: bool = False
    given: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        targets = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
        object.__setattr__(self, "targets", targets)
        object.__setattr__(self, "concepts", tuple(self.concepts))
        object.__setattr__(self, "given", frozenset(self.given))

    @property
    def seeds(self) -> list[int]:
        """The seeds of the inversions (or SDEdit samples): ``seed .. seed + num_outputs - 1``."""
        return list(range(self.seed, self.seed + self.num_outputs))

    @property
    def inversion_cfg(self) -> float:
        """The guidance scale the inversion runs at: ``cfg_src``, or for null-text ``cfg_tar`` (its
        unconditional branch is optimised for the scale the edit uses)."""
        return self.cfg_tar if self.method == "null-text" else self.cfg_src

    def check(self, frontend: Frontend | None = None) -> None:
        """:func:`check_request` of this request."""
        check_request(self, frontend)


@dataclass(frozen=True)
class Frontend:
    """How one frontend words the refusals of :func:`check_request`, and its bounds. The defaults are
    the command line's.

    Each message is a ``str.format`` template; the fields it may use are named beside it. A template
    of None: that frontend lets the combination run.

    Attributes:
        max_outputs, max_components, max_amount, max_iterations: the most seeds, components,
            standard deviations and subspace iterations accepted.
        seed: how the first seed is named ("--seed").
        names: request field -> its name in messages (default: "--" and the name with dashes).
        methods: method -> its name in messages (default: the method itself).
    """

    max_outputs: int = 64
    max_components: int = 64
    max_amount: float = 1000.0
    max_iterations: int = 1000
    seed: str = "--seed"
    names: Mapping[str, str] = field(default_factory=dict)
    methods: Mapping[str, str] = field(default_factory=dict)
    fixed_by_inversion: str = (  # {options}
        "{options} cannot be given with --inversion: the file fixes steps, tstart, cfg-src, eta, seeds, source prompt, "
        "method and null-text settings; leave them out, or leave out --inversion to invert again"
    )
    saved_already: str = "--save-inversion cannot be given with --inversion: the inversion is saved already"
    no_edit: str = (
        "give either --target / --add / --remove (a text edit) or --pc (a prompt-free edit along principal components), "
        'e.g. --target "jazz piano" or --pc 1'
    )
    two_edits: str = (
        "give either --target / --add / --remove (a text edit) or --pc (a prompt-free edit along principal components), "
        "not both"
    )
    pc_options_alone: str = "--amount, --region, --pc-at, --pc-iterations, --save-pcs and --pcs go with --pc"
    pc_prompts: str | None = (  # {options}, {them}
        "--pc moves the input along its own components, with the source prompt and its guidance, so {options} cannot act: "
        "leave {them} out"
    )
    pc_needs_inversion: str = "--pc moves an inversion along its own components: leave out --method sdedit and --mask"
    component_count: str = "--pc counts components from 1 to {limit}, got {components}"  # {count} too
    component_range: str = "--pc counts components from 1 to {limit}, got {components}"  # {count}, {component}
    amount: str = "--amount takes finite numbers of standard deviations, got {amounts}"  # {limit}, {amount}
    amount_large: str | None = (  # {limit}, {amount}; None: ``amount`` says it
        "--amount {amount:g} is too large: at most {limit:g} standard deviations (the paper moves by 1 to 3)"
    )
    pc_iterations: str = "--pc-iterations must be between 1 and {limit}, got {iterations}"
    pc_at: str = "--pc-at must be a step of the edit, 0 to tstart - 1 ({last}), got {step}"
    pcs_file_with: str = "--pcs uses saved components: leave out --save-pcs and --region"
    empty_target: str = '--target must not be empty: describe the edit, e.g. --target "jazz piano"'
    late_warmup: str | None = (  # {warmup}, {tstart}
        "--warmup {warmup} is not below --tstart {tstart}, so the concepts would never act: give a smaller --warmup"
    )
    concept_options: str | None = "{options} {tune} --add / --remove: give a concept, or leave {them} out"
    deterministic_eta: str | None = (  # {method}
        "--method {method} is deterministic (no sampler noise), so --eta cannot act: leave it out"
    )
    outputs_range: str = "--num-outputs must be between 1 and {limit}, got {count}"
    sdedit_clash: str = "--method sdedit inverts nothing, so {options} cannot be given with it"
    deterministic: str = "--method {method} is deterministic, so several outputs would be equal: leave out --num-outputs"
    tuning: str = "{options} {tune} --method null-text: give it, or leave {them} out"
    null_text_cfg_src: str = (
        "--method null-text optimises for the edit's guidance, --cfg-tar, and its pivot runs at scale 1: leave out --cfg-src"
    )
    null_text_negative: str = "--method null-text optimises its own unconditional branch: leave out --negative"
    concepts_sdedit: str = "--add / --remove guide an edit of an inversion: use --method ddpm, ddim or null-text"
    auto_mask_targets: str = "--mask auto compares one target with the source: give one --target"
    same_prompts: str | None = "the mask needs a target description that differs from the source"
    mask_empty: str = "--mask is empty: give auto, a PNG file or a region"
    mask_to_save: str = "--save-mask needs a --mask to save"
    p2p_alone: str = "{options} {tune} --p2p (Prompt-to-Prompt): give --p2p replace or refine, or leave {them} out"
    p2p_method: str = "--p2p controls the attention of an inversion's edit: use --method ddpm, ddim or null-text, not {method}"
    p2p_with: str = "--p2p edits by attention control alone: leave out {options}"
    flowedit_clash: str = "--method flowedit inverts nothing, so {options} cannot be given with it"
    flowedit_alone: str = "{options} {tune} --method flowedit: give it, or leave {them} out"
    flowedit_range: str = "--n-min must be between 0 and --tstart ({tstart}) and --n-avg between 1 and {limit}, got {n_min} and {n_avg}"

    def name(self, setting: str) -> str:
        """How messages name a request field."""
        return self.names.get(setting, "--" + setting.replace("_", "-"))

    def method(self, method: str) -> str:
        """How messages name a method."""
        return self.methods.get(method, method)


COMMAND_LINE = Frontend()
"""The wording and bounds of ``image-edit`` and ``audio-edit``."""


def _refuse(template: str, **fields: Any) -> InputError:
    return InputError(template.format(**fields))


def check_request(request: EditRequest, frontend: Frontend | None = None) -> None:
    """Refuse, with one line, a request no edit can run with: an unknown method, settings out of
    range, a loaded inversion with settings it fixes, no edit or two kinds of edit at once, principal
    components that cannot run, empty targets, bad concepts, seeds out of range, and options a method
    cannot take (SDEdit inverts nothing; DDIM and null-text inversion are deterministic; null-text
    brings its own unconditional branch; an automatic mask compares one target with the source).

    Args:
        frontend: the wording and bounds (default: the command line's, ``COMMAND_LINE``).
    Raises:
        InputError: the first rule the request breaks, in the frontend's words.
    """
    words = frontend or COMMAND_LINE
    r, pcs, mask = request, request.pcs, request.mask
    if r.method not in METHODS:
        raise InputError(f"unknown method {r.method!r}: choose {', '.join(METHODS)}")
    if r.inversion_loaded:
        fixed = [words.name(name) for name in FIXED_BY_INVERSION if name in r.given]
        if fixed:
            raise _refuse(words.fixed_by_inversion, options=", ".join(fixed))
        if r.save_inversion:
            raise _refuse(words.saved_already)
    check_settings(r.steps, r.tstart, r.eta, r.cfg_src, r.cfg_tar)
    prompted = bool(r.targets or r.concepts)
    if prompted == bool(pcs.components):
        raise _refuse(words.two_edits if prompted else words.no_edit)
    _check_components(r, words)
    if any(not target.strip() for target in r.targets):
        raise _refuse(words.empty_target)
    check_concepts(r.concepts)
    tuning = [words.name(name) for name in ("concept_scale", "threshold", "warmup") if name in r.given]
    if tuning and not r.concepts and words.concept_options is not None:
        many = len(tuning) > 1
        raise _refuse(words.concept_options, options=", ".join(tuning), tune="tune" if many else "tunes", them="them" if many else "it")
    late = [c for c in r.concepts if c.scale > 0 and c.warmup >= r.tstart]
    if late and words.late_warmup is not None and not r.inversion_loaded:
        raise _refuse(words.late_warmup, warmup=late[0].warmup, tstart=r.tstart)
    if not 1 <= r.num_outputs <= words.max_outputs:
        raise _refuse(words.outputs_range, limit=words.max_outputs, count=r.num_outputs)
    consecutive_seeds(r.seed, r.num_outputs, words.seed)
    _check_method(r, words)
    if sum((mask.auto, mask.file is not None, mask.region is not None)) > 1:
        raise InputError("a mask is automatic, a file or a region: give one of them")
    if mask.auto and len(r.targets) != 1:
        raise _refuse(words.auto_mask_targets)
    if mask.auto and words.same_prompts is not None and not r.inversion_loaded and r.targets[0] == r.source:
        raise _refuse(words.same_prompts)
    if mask.file is not None and not mask.file.strip():
        raise _refuse(words.mask_empty)
    if mask.save and not mask.given:
        raise _refuse(words.mask_to_save)
    _check_p2p(r, words)


def _check_p2p(r: EditRequest, words: Frontend) -> None:
    """The rules of a Prompt-to-Prompt edit (the prompts' tokens are checked once the model is loaded)."""
    if r.p2p is None:
        alone = [words.name(name) for name in P2P_ONLY if name in r.given]
        if alone:
            many = len(alone) > 1
            raise _refuse(words.p2p_alone, options=", ".join(alone), tune="go with" if many else "goes with", them="them" if many else "it")
        return
    r.p2p.check()
    if r.method not in INVERSION_METHODS:
        raise _refuse(words.p2p_method, method=words.method(r.method))
    clashing = [name for name, value in (
        (words.names.get("concepts", "--add / --remove"), bool(r.concepts)), (words.name("mask"), r.mask.given), (words.name("pc"), bool(r.pcs.components)),
    ) if value]  # fmt: skip
    if clashing:
        raise _refuse(words.p2p_with, options=", ".join(clashing))


def _check_components(r: EditRequest, words: Frontend) -> None:
    """The rules of a prompt-free edit along principal components."""
    pcs = r.pcs
    if not pcs.components:
        if pcs.amounts or pcs.save or pcs.file is not None or pcs.region is not None or {"pc_at", "pc_iterations"} & r.given:
            raise _refuse(words.pc_options_alone)
        return
    unused = [words.name(name) for name in ("cfg_tar", "negative") if name in r.given]
    if unused and words.pc_prompts is not None:
        raise _refuse(words.pc_prompts, options=" and ".join(unused), them="them" if len(unused) > 1 else "it")
    if r.method == "sdedit" or r.mask.given:
        raise _refuse(words.pc_needs_inversion)
    components, count = list(pcs.components), pcs.found
    if not 1 <= count <= words.max_components:
        raise _refuse(words.component_count, limit=words.max_components, components=components, count=count)
    wrong = [k for k in components if not 1 <= k <= count]
    if wrong:
        raise _refuse(words.component_range, limit=words.max_components, components=components, count=count,
                      component=wrong[0])  # fmt: skip
    strays = [a for a in pcs.amounts if not (math.isfinite(a) and abs(a) <= words.max_amount)]
    if strays:
        large = math.isfinite(strays[0]) and words.amount_large is not None
        raise _refuse(words.amount_large if large else words.amount, limit=words.max_amount,  # type: ignore[arg-type]
                      amounts=list(pcs.amounts), amount=abs(strays[0]))  # fmt: skip
    if not 1 <= pcs.iterations <= words.max_iterations:
        raise _refuse(words.pc_iterations, limit=words.max_iterations, iterations=pcs.iterations)
    if pcs.at_step < 0 or (not r.inversion_loaded and pcs.at_step >= r.tstart):
        raise _refuse(words.pc_at, last=r.tstart - 1, step=pcs.at_step)
    if pcs.file is not None and (pcs.save or pcs.region is not None):
        raise _refuse(words.pcs_file_with)


def _check_method(r: EditRequest, words: Frontend) -> None:
    """The options each method cannot take."""
    if r.method == "sdedit":
        clashing = [words.name(name) for name, value in (
            ("inversion", r.inversion_loaded), ("save_inversion", r.save_inversion), ("mask", r.mask.given),
            ("cfg_src", "cfg_src" in r.given), ("source", "source" in r.given),
        ) if value]  # fmt: skip
        if clashing:
            raise _refuse(words.sdedit_clash, options=", ".join(clashing))
    if r.method in ("ddim", "null-text") and r.num_outputs != 1:
        raise _refuse(words.deterministic, method=words.method(r.method))
    if r.method in ("ddim", "null-text") and "eta" in r.given and not r.inversion_loaded and words.deterministic_eta is not None:
        raise _refuse(words.deterministic_eta, method=words.method(r.method))
    tuning = [words.name(name) for name in ("inner_steps", "early_stop") if name in r.given]
    if r.method != "null-text" and tuning and not r.inversion_loaded:
        many = len(tuning) > 1
        raise _refuse(words.tuning, options=" and ".join(tuning), tune="tune" if many else "tunes", them="them" if many else "it")
    if r.method == "null-text":
        if "cfg_src" in r.given:
            raise _refuse(words.null_text_cfg_src)
        if r.negative:
            raise _refuse(words.null_text_negative)
        check_null_text_settings(r.inner_steps, LEARNING_RATE, r.early_stop)
    if r.concepts and r.method == "sdedit":
        raise _refuse(words.concepts_sdedit)
    _check_flowedit(r, words)


def _check_flowedit(r: EditRequest, words: Frontend) -> None:
    """FlowEdit's rules: nothing inverted, its own two settings."""
    own = [words.name(name) for name in ("n_min", "n_avg") if name in r.given]
    if r.method != "flowedit":
        if own:
            many = len(own) > 1
            raise _refuse(words.flowedit_alone, options=", ".join(own), tune="go with" if many else "goes with", them="them" if many else "it")
        return
    clashing = [name for name, value in (
        (words.name("inversion"), r.inversion_loaded), (words.name("save_inversion"), r.save_inversion),
        (words.name("mask"), r.mask.given), (words.name("eta"), "eta" in r.given),
        (words.names.get("concepts", "--add / --remove"), bool(r.concepts)), (words.name("pc"), bool(r.pcs.components)),
        (words.name("p2p"), r.p2p is not None),
    ) if value]  # fmt: skip
    if clashing:
        raise _refuse(words.flowedit_clash, options=", ".join(clashing))
    if not (0 <= r.n_min <= r.tstart and 1 <= r.n_avg <= MAX_AVG):
        raise _refuse(words.flowedit_range, tstart=r.tstart, limit=MAX_AVG, n_min=r.n_min, n_avg=r.n_avg)
