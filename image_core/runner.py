"""Running one :class:`~image_core.request.EditRequest` with an editor (``ImageEditor`` or
``AudioEditor``): SDEdit, or an inversion (made now or given), then a prompt-free move along principal
components, or a mask and the edit. :func:`run_request` is the one way the command lines and the demo
page run an edit; :class:`Stages` lets a frontend report progress, stop a cancelled run and keep
what a stage made (the demo's cache) between the stages."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .errors import InputError
from .p2p import check_prompts
from .request import EditRequest, Region

if TYPE_CHECKING:
    from .inversion import Inversion
    from .methods.pcs import PosteriorPCs

Stage = Literal["sdedit", "invert", "components", "mask", "edit"]
"""The stages of a run: SDEdit (all of it), the inversion, finding the principal components, the mask,
and the edit (or the move along the components)."""


@dataclass
class Edited:
    """What :func:`run_request` made.

    Attributes:
        outputs: the editor's outputs, target-major (item ``i * B + j``: target or (component,
            amount) pair ``i``, seed ``j``).
        inversion: the inversion edited (made now or given); None for SDEdit, which inverts nothing.
        mask: the mask the edit was limited to, None without one.
        pcs: the principal components of a prompt-free edit, None otherwise.
        attention: a Prompt-to-Prompt edit's word maps (``p2p.AttentionMaps``) when asked for, else None.
    """

    outputs: Any
    inversion: Inversion | None
    mask: Any = None
    pcs: Any = None
    attention: Any = None


def _nothing(*args: Any) -> None:
    return None


def _same(inversion: Inversion) -> Inversion:
    return inversion


@dataclass(frozen=True)
class Stages:
    """What a frontend does between the stages of :func:`run_request` (by default nothing).

    Attributes:
        starting: called with the :data:`Stage` about to run (report progress; raise to stop a run).
        inverted: called with the inversion just made; returns the one the run goes on with (the
            demo keeps a copy in host memory and edits that).
        found: called with the principal components just found (the demo caches them).
        masked: called with the mask just made and the inversion (the demo refuses an empty
            automatic mask and draws it).
    """

    starting: Callable[[str], None] = _nothing
    inverted: Callable[[Inversion], Inversion] = _same
    found: Callable[[PosteriorPCs], None] = _nothing
    masked: Callable[[Any, Inversion], None] = _nothing


def run_request(
    editor: Any,
    request: EditRequest,
    item: Any,
    loaded_inversion: Inversion | None = None,
    *,
    loaded_pcs: PosteriorPCs | None = None,
    stages: Stages | None = None,
) -> Edited:
    """Run the edit ``request`` asks for (checked already by ``check_request``).

    Args:
        editor: an ``ImageEditor`` or ``AudioEditor`` (or anything with their methods).
        item: the input the editor reads (a path, a picture, an ``Audio``); may be None when
            ``loaded_inversion`` is given.
        loaded_inversion: an inversion to edit instead of inverting ``item`` (from a file, or cached).
        loaded_pcs: principal components to move along instead of finding them (cached ones).
        stages: the frontend's calls between the stages.
    Returns:
        The outputs with the inversion, mask and components used.
    """
    stages = stages or Stages()
    negative = {"negative_prompt": request.negative} if request.negative else {}
    use_conditions(editor, request, loaded_inversion)
    if request.method == "sdedit":
        stages.starting("sdedit")
        outputs = editor.sdedit(
            item, target_prompt=list(request.targets), num_steps=request.steps, t_start=request.tstart,
            cfg_tar=request.cfg_tar, eta=request.eta, seed=request.seeds, **negative,
        )  # fmt: skip
        return Edited(outputs, None)
    if request.method == "flowedit":
        stages.starting("sdedit")
        outputs = editor.flowedit(
            item, list(request.targets), source_prompt=request.source, num_steps=request.steps, n_max=request.tstart,
            n_min=request.n_min, n_avg=request.n_avg, cfg_src=request.cfg_src, cfg_tar=request.cfg_tar, seed=request.seeds,
            **negative,
        )  # fmt: skip
        return Edited(outputs, None)
    inv = loaded_inversion
    if request.p2p is not None:  # the prompts' tokens, before anything is inverted
        check_prompts(editor.model, inv.settings.source_prompt if inv is not None else request.source, request.targets, request.p2p)
    if inv is None:
        stages.starting("invert")
        inv = stages.inverted(invert(editor, request, item))
    if request.pcs.components:
        pcs = loaded_pcs if loaded_pcs is not None else components(editor, request, inv, stages)
        stages.starting("edit")
        outputs = editor.edit_pc(inv, pcs, pc=list(request.pcs.components), amount=list(request.pcs.moves))
        return Edited(outputs, inv, pcs=pcs)
    if request.p2p is not None:
        stages.starting("edit")
        o = request.p2p
        result = editor.edit_p2p(
            inv, list(request.targets), mode=o.mode, cross_steps=o.cross_steps, self_steps=o.self_steps, reweight=dict(o.reweight),
            blend=list(o.blend), cfg_tar=request.cfg_tar, return_attention=request.save_attention, **negative,
        )  # fmt: skip
        outputs, maps = result if request.save_attention else (result, None)
        return Edited(outputs, inv, attention=maps)
    mask = make_mask(editor, request, inv, stages)
    stages.starting("edit")
    guidance = {"concepts": list(request.concepts)} if request.concepts else {}
    targets = list(request.targets) or None  # None: the source prompt, guided by the concepts alone
    outputs = editor.edit(inv, target_prompt=targets, cfg_tar=request.cfg_tar, mask=mask, **negative, **guidance)
    return Edited(outputs, inv, mask)


def use_conditions(editor: Any, request: EditRequest, inversion: Inversion | None = None) -> None:
    """Give the editor's model the request's conditions besides the prompts, or ``inversion``'s own,
    before any prompt is read: the editor's ``use_request_conditions`` where it has one (ACE-Step's
    lyrics); InputError for lyrics (the clip's, or targets' own) an editor without it cannot take."""
    own = getattr(editor, "use_request_conditions", None)
    if own is not None:
        own(request, inversion)
    elif request.lyrics or any(hasattr(target, "lyrics") for target in request.targets):
        raise InputError("only ACE-Step models are conditioned on lyrics: leave the lyrics out, or use an ACE-Step model")


def invert(editor: Any, request: EditRequest, item: Any) -> Inversion:
    """The inversion of ``item`` the request asks for (null-text: optimised for ``cfg_tar``)."""
    tuning = {"inner_steps": request.inner_steps, "early_stop": request.early_stop} if request.method == "null-text" else {}
    return editor.invert(
        item, source_prompt=request.source, num_steps=request.steps, t_start=request.tstart, cfg_src=request.inversion_cfg,
        eta=request.eta, seed=request.seeds, method=request.method, **tuning,
    )  # fmt: skip


def components(editor: Any, request: EditRequest, inv: Inversion, stages: Stages | None = None) -> PosteriorPCs:
    """The principal components the request moves along: read from its file, or found now."""
    stages = stages or Stages()
    options = request.pcs
    if options.file is not None:
        from .methods.pcs import PosteriorPCs

        return PosteriorPCs.load(options.file)
    stages.starting("components")
    limit = None if options.region is None else region_mask(editor, options.region, inv)
    found = editor.principal_components(inv, n=options.found, step=options.at_step, region=limit, max_iterations=options.iterations)
    if options.region is not None:  # how the region was given, for records and the file's info
        found = dataclasses.replace(found, info={**found.info, "region": _described(options.region)})
    stages.found(found)
    return found


def _described(region: Any) -> Any:
    """A region as JSON: as given (a box, ranges, text), or "a mask" for a function of the inversion."""
    if callable(region):
        return "a mask"
    if isinstance(region, Mapping):
        return {key: list(value) for key, value in region.items()}
    return region if isinstance(region, str) else list(region)


def make_mask(editor: Any, request: EditRequest, inv: Inversion, stages: Stages | None = None) -> Any:
    """The mask the request limits the edit to (None for the whole input): DiffEdit's, a region's or a file's."""
    stages = stages or Stages()
    choice = request.mask
    if not choice.given:
        return None
    stages.starting("mask")
    if choice.auto:
        mask = editor.mask(inv, request.targets[0], seed=choice.seed)
    elif choice.region is not None:
        mask = region_mask(editor, choice.region, inv)
    else:
        mask = editor.load_mask(choice.file, inv)
    stages.masked(mask, inv)
    return mask


def region_mask(editor: Any, region: Region, inv: Inversion) -> Any:
    """The (1, 1, ...) mask of a parsed region: a function of the inversion, the keyword arguments of
    ``editor.region_mask`` (audio), or its positional argument (images: a box)."""
    if isinstance(region, str):
        raise TypeError(f"the region {region!r} is the text as typed: parse it into the editor's region_mask arguments first")
    if callable(region):
        return region(inv)
    if isinstance(region, Mapping):
        return editor.region_mask(inv, **region)
    if isinstance(region, Sequence):
        return editor.region_mask(inv, region)
    raise TypeError(f"a region is a function, a mapping or a sequence, got {type(region).__name__}")
