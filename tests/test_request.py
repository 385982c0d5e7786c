"""One edit as a value (image_core.request): the one check, in the command line's and the demo page's
words, and the one runner (image_core.runner) with the tiny random-weight audio and image models (CPU)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from audio_edit.demo.checks import PAGE, components_request, edit_request
from image_core import cli_common
from image_core.errors import InputError
from image_core.methods.sega import Concept
from image_core.request import COMMAND_LINE, EditRequest, MaskChoice, PCOptions, check_request
from image_core.runner import Stages, run_request
from image_core.settings import MAX_SEED

STEPS, T_START = 10, 4


def request(**changes: object) -> EditRequest:
    """A request that passes the check (one target, the tiny runs' settings), with ``changes``."""
    settings = {"targets": ("jazz piano",), "steps": STEPS, "tstart": T_START, "cfg_src": 3.0, "cfg_tar": 12.0}
    return EditRequest(**{**settings, **changes})  # type: ignore[arg-type]


PC = PCOptions(components=(1,))
LOADED = {"inversion_loaded": True}
BOTH = "give either --target / --add / --remove (a text edit) or --pc (a prompt-free edit along principal components), "

# case -> (the request's changes, the whole message of the command line)
COMMAND_LINE_REFUSES = {
    "unknown method": ({"method": "dpm-solver"}, "unknown method 'dpm-solver': choose ddpm, ddim, null-text, sdedit, flowedit"),
    "settings an inversion file fixes": (
        {**LOADED, "given": {"seed", "steps", "cfg_tar"}},
        "--steps, --seed cannot be given with --inversion: the file fixes steps, tstart, cfg-src, eta, seeds, source "
        "prompt, method and null-text settings; leave them out, or leave out --inversion to invert again",
    ),
    "saving a loaded inversion": (
        {**LOADED, "save_inversion": True}, "--save-inversion cannot be given with --inversion: the inversion is saved already"
    ),
    "tstart above steps": ({"tstart": 20}, f"tstart must be between 1 and steps ({STEPS}), got 20"),
    "nan guidance": ({"cfg_tar": float("nan")}, "guidance scales must be between 0 and 100, got nan"),
    "no edit": ({"targets": ()}, BOTH + 'e.g. --target "jazz piano" or --pc 1'),
    "two kinds of edit": ({"pcs": PC}, BOTH + "not both"),
    "amount without components": (
        {"pcs": PCOptions(amounts=(2.0,))}, "--amount, --region, --pc-at, --pc-iterations, --save-pcs and --pcs go with --pc"
    ),
    "components region without components": (
        {"pcs": PCOptions(region="0.1:0.4")}, "--amount, --region, --pc-at, --pc-iterations, --save-pcs and --pcs go with --pc"
    ),
    "components of sdedit": (
        {"targets": (), "pcs": PC, "method": "sdedit"},
        "--pc moves an inversion along its own components: leave out --method sdedit and --mask",
    ),
    "components inside a mask": (
        {"targets": (), "pcs": PC, "mask": MaskChoice(auto=True)},
        "--pc moves an inversion along its own components: leave out --method sdedit and --mask",
    ),
    "component zero": ({"targets": (), "pcs": PCOptions(components=(0,))}, "--pc counts components from 1 to 64, got [0]"),
    "component 65": ({"targets": (), "pcs": PCOptions(components=(1, 65))}, "--pc counts components from 1 to 64, got [1, 65]"),
    "amount nan": (
        {"targets": (), "pcs": PCOptions(components=(1,), amounts=(float("nan"),))},
        "--amount takes finite numbers of standard deviations, got [nan]",
    ),
    "no iterations": (
        {"targets": (), "pcs": PCOptions(components=(1,), iterations=0)}, "--pc-iterations must be between 1 and 1000, got 0"
    ),
    "components after the edit": (
        {"targets": (), "pcs": PCOptions(components=(1,), at_step=T_START)},
        f"--pc-at must be a step of the edit, 0 to tstart - 1 ({T_START - 1}), got {T_START}",
    ),
    "saved components saved again": (
        {"targets": (), "pcs": PCOptions(components=(1,), file="clip.pcs", save=True)},
        "--pcs uses saved components: leave out --save-pcs and --region",
    ),
    "empty target": ({"targets": ("a", " ")}, '--target must not be empty: describe the edit, e.g. --target "jazz piano"'),
    "empty concept": (
        {"concepts": (Concept(" "),)}, 'a concept must not be empty: name what to add or remove, e.g. "jazz piano"'
    ),
    "65 outputs": ({"num_outputs": 65}, "--num-outputs must be between 1 and 64, got 65"),
    "negative seed": ({"seed": -1}, f"--seed must be between 0 and {MAX_SEED}, got -1"),
    "sdedit keeps nothing": (
        {"method": "sdedit", "save_inversion": True, "mask": MaskChoice(file="mask.png")},
        "--method sdedit inverts nothing, so --save-inversion, --mask cannot be given with it",
    ),
    "ddim with two outputs": (
        {"method": "ddim", "num_outputs": 2},
        "--method ddim is deterministic, so several outputs would be equal: leave out --num-outputs",
    ),
    "inner steps without null-text": (
        {"given": {"inner_steps"}}, "--inner-steps tunes --method null-text: give it, or leave it out"
    ),
    "both tunings without null-text": (
        {"given": {"inner_steps", "early_stop"}},
        "--inner-steps and --early-stop tune --method null-text: give it, or leave them out",
    ),
    "null-text with cfg-src": (
        {"method": "null-text", "given": {"cfg_src"}},
        "--method null-text optimises for the edit's guidance, --cfg-tar, and its pivot runs at scale 1: leave out --cfg-src",
    ),
    "null-text with a negative prompt": (
        {"method": "null-text", "negative": "noise"},
        "--method null-text optimises its own unconditional branch: leave out --negative",
    ),
    "null-text inner steps absurd": (
        {"method": "null-text", "inner_steps": 5000}, "inner steps must be a whole number from 0 to 1000, got 5000"
    ),
    "concepts with sdedit": (
        {"method": "sdedit", "concepts": (Concept("drums"),)},
        "--add / --remove guide an edit of an inversion: use --method ddpm, ddim or null-text",
    ),
    "auto mask with two targets": (
        {"targets": ("a", "b"), "mask": MaskChoice(auto=True)}, "--mask auto compares one target with the source: give one --target"
    ),
    "auto mask with the source as target": (
        {"source": "jazz piano", "mask": MaskChoice(auto=True)}, "the mask needs a target description that differs from the source"
    ),
    "empty mask": ({"mask": MaskChoice(file=" ")}, "--mask is empty: give auto, a PNG file or a region"),
    "saving no mask": ({"mask": MaskChoice(save=True)}, "--save-mask needs a --mask to save"),
    "two masks": (
        {"mask": MaskChoice(auto=True, file="mask.png")}, "a mask is automatic, a file or a region: give one of them"
    ),
}


@pytest.mark.parametrize("case", COMMAND_LINE_REFUSES)
def test_the_check_refuses_with_the_command_lines_line(case: str) -> None:
    changes, message = COMMAND_LINE_REFUSES[case]
    with pytest.raises(InputError) as caught:
        check_request(request(**changes))
    assert str(caught.value) == message


PAGE_REFUSES = {
    "no edit": ({"targets": ()}, 'type a target description of the edit, e.g. "jazz piano", or add a concept'),
    "five variations": ({"num_outputs": 5}, "variations must be between 1 and 4, got 5"),
    "negative seed": ({"seed": -1}, f"seed must be between 0 and {MAX_SEED}, got -1"),
    "null-text with variations": (
        {"method": "null-text", "num_outputs": 3},
        "Null-text inversion is deterministic, so several variations would be the same edit: "
        "set Variations to 1, or choose DDPM inversion or SDEdit for variations",
    ),
    "sdedit with the automatic mask": (
        {"method": "sdedit", "mask": MaskChoice(auto=True)},
        "the automatic mask needs an inversion, and SDEdit makes none: choose another method, or untick Automatic mask",
    ),
    "concepts with sdedit": (
        {"method": "sdedit", "concepts": (Concept("drums"),)},
        "concepts need an inversion, and SDEdit makes none: choose another method, or clear the concepts",
    ),
    "automatic mask without a target": (
        {"targets": (), "concepts": (Concept("drums"),), "mask": MaskChoice(auto=True)},
        "the automatic mask compares the target with the source description: type a target description, or untick Automatic mask",
    ),
    "automatic mask of the source": (
        {"source": "jazz piano", "mask": MaskChoice(auto=True)},
        "the automatic mask compares the target with the source description, so they must differ: change one, or untick Automatic mask",
    ),
    "late concepts": (
        {"concepts": (Concept("drums", warmup=T_START),)},
        f"the concepts' warm-up ({T_START} steps) must be below t_start ({T_START}), or they never guide the edit: lower the warm-up",
    ),
    "components of sdedit": (
        {"targets": (), "method": "sdedit", "pcs": PC},
        "principal components need an inversion, and SDEdit makes none: choose another method",
    ),
    "six components": (
        {"targets": (), "pcs": PCOptions(components=(1,), count=6)}, "the number of components must be between 1 and 5, got 6"
    ),
    "a component not found": (
        {"targets": (), "pcs": PCOptions(components=(3,), count=2)},
        "the component to move must be between 1 and 2 (the components found), got 3",
    ),
    "too far": (
        {"targets": (), "pcs": PCOptions(components=(1,), amounts=(-6.0, 6.0))},
        "the amount must be between 0 and 5 standard deviations, got 6",
    ),
    "no iterations": (
        {"targets": (), "pcs": PCOptions(components=(1,), iterations=0)}, "iterations must be between 1 and 100, got 0"
    ),
}


@pytest.mark.parametrize("case", PAGE_REFUSES)
def test_the_check_refuses_with_the_pages_line(case: str) -> None:
    changes, message = PAGE_REFUSES[case]
    with pytest.raises(InputError) as caught:
        request(**changes).check(PAGE)
    assert str(caught.value) == message


GOOD = {
    "ddpm, two targets, two seeds": {"targets": ("a", "b"), "num_outputs": 2, "seed": 7},
    "ddim": {"method": "ddim"},
    "null-text, tuned": {"method": "null-text", "inner_steps": 2, "early_stop": 0.0, "given": {"inner_steps", "cfg_tar"}},
    "sdedit, three seeds": {"method": "sdedit", "num_outputs": 3, "negative": "noise"},
    "concepts alone": {"targets": (), "concepts": (Concept("drums", remove=True), Concept("piano"))},
    "automatic mask, saved": {"mask": MaskChoice(auto=True, save=True)},
    "a region": {"mask": MaskChoice(region={"seconds": (0.1, 0.5)})},
    "components": {"targets": (), "pcs": PCOptions(components=(1, 2), amounts=(-2.0, 2.0), region="0.1:0.4", save=True)},
    "saved components of a loaded inversion": {
        "targets": (), "pcs": PCOptions(components=(2,), file="clip.pcs", at_step=T_START + 5), **LOADED,
    },
}


@pytest.mark.parametrize("case", GOOD)
@pytest.mark.parametrize("frontend", [COMMAND_LINE, PAGE], ids=["command line", "page"])
def test_good_requests_pass(case: str, frontend: object) -> None:
    request(**GOOD[case]).check(frontend)  # type: ignore[arg-type]


def test_late_concepts_are_refused_everywhere() -> None:
    """Concepts whose warm-up reaches tstart never guide the edit: the page and the command line refuse them."""
    late = request(concepts=(Concept("drums", warmup=T_START),))
    with pytest.raises(InputError, match="would never act"):
        late.check()
    with pytest.raises(InputError, match="never guide the edit"):
        late.check(PAGE)


def test_the_pages_requests() -> None:
    concepts = [Concept("drums", remove=True)]
    made = edit_request(" jazz ", " a melody ", 10.0, 4.0, 3, 12, 2.0, 2.0, None, True, concepts)
    assert made == request(targets=("jazz",), source="a melody", cfg_src=3.0, seed=2, num_outputs=2,
                           concepts=tuple(concepts), mask=MaskChoice(auto=True, seed=2))  # fmt: skip
    assert edit_request("", "", 10, 4, 3, 12, 0, 1, "SDEdit ", False, ()).targets == ()
    pcs = components_request("", 10, 4, 3.5, 0, "null-text", 3, 2, 1.5, (0.5, 1.0), 20)
    assert (pcs.method, pcs.inversion_cfg, pcs.seeds) == ("null-text", 3.5, [0])  # optimised for the source guidance
    assert pcs.pcs == PCOptions(components=(2,), amounts=(-1.5, 1.5), count=3, iterations=20, region={"seconds": (0.5, 1.0)})
    with pytest.raises(InputError, match="the amount must be between 0 and 5 standard deviations, got -1"):
        components_request("", 10, 4, 3.5, 0, None, 3, 2, -1, None, 20)
    with pytest.raises(InputError, match="steps must be a whole number"):
        edit_request("jazz", "", 10.5, 4, 3, 12, 0, 1, None, False, ())


def test_the_command_line_makes_its_request() -> None:
    parser = cli_common.edit_parser("edit", "", model="tiny", steps=200, t_start=100, cfg_src=3.0, cfg_tar=12.0, region="")
    parser.add_argument("--region", default=None)
    args = cli_common.parse_arguments(parser, ["in.wav", "--target", "a", "--steps", "8", "--tstart", "4", "--mask", "0:1s",
                                               "--add", "b", "--seed", "3", "--num-outputs", "2"])  # fmt: skip
    typed = cli_common.request_from_args(args)
    assert typed.given == {"steps", "tstart", "seed", "num_outputs"} and typed.seeds == [3, 4]
    assert typed.mask == MaskChoice(file="0:1s") and typed.concepts == (Concept("b", 10.0, False, 0.95, 1),)
    parsed = cli_common.request_from_args(args, {"seconds": (0.0, 1.0)}, None, parsed=True)
    assert parsed == dataclasses.replace(typed, mask=MaskChoice(region={"seconds": (0.0, 1.0)}))
    args = cli_common.parse_arguments(parser, ["in.wav", "--pc", "2", "--region", "0.1:0.4", "--inversion", "x.inv"])
    typed = cli_common.request_from_args(args)
    assert typed.inversion_loaded and typed.pcs.region == "0.1:0.4" and typed.pcs.found == 2
    assert cli_common.request_from_args(args, None, None, parsed=True).pcs.region is None


# ------------------------------------------------------------------------------------------ the runner


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny models on one CPU thread: their matrices are too small to share, and on a busy machine
    threads that wait for each other turn a run of seconds into minutes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def audio_editor():
    from audio_edit.editor import AudioEditor

    return AudioEditor.from_pretrained("tiny", device="cpu", progress=False)


@pytest.fixture(scope="module")
def image_editor():
    from image_core.stable_diffusion.editor import ImageEditor

    return ImageEditor.from_pretrained("tiny", device="cpu", progress=False)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One second of a tone at 16 kHz."""
    path = tmp_path_factory.mktemp("clip") / "tone.wav"
    t = np.arange(16000) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 16000)
    return path


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    y, x = np.mgrid[0:32, 0:32]
    return Image.fromarray((np.stack([x / 32, y / 32, (x + y) / 64], -1) * 255).astype(np.uint8))


def _recorder() -> tuple[list[str], Stages]:
    stages: list[str] = []
    return stages, Stages(starting=stages.append)


RUNS = {  # case -> (the request's changes, outputs, stages)
    "ddpm, two targets, two seeds": ({"targets": ("jazz", "a choir"), "num_outputs": 2}, 4, ["invert", "edit"]),
    "ddim": ({"method": "ddim"}, 1, ["invert", "edit"]),
    "sdedit, two seeds": ({"method": "sdedit", "num_outputs": 2}, 2, ["sdedit"]),
    "components": (
        {"targets": (), "pcs": PCOptions(components=(1, 2), amounts=(-1.0, 1.0), iterations=2)}, 4,
        ["invert", "components", "edit"],
    ),
}


@pytest.mark.parametrize("case", RUNS)
def test_run_request_edits_a_clip(case: str, audio_editor, clip: Path) -> None:
    changes, count, expected = RUNS[case]
    made = request(**changes)
    made.check()
    stages, hooks = _recorder()
    edited = run_request(audio_editor, made, clip, stages=hooks)
    assert len(edited.outputs) == count and stages == expected
    assert all(out.shape == (16000,) and np.isfinite(out).all() for out in edited.outputs)
    assert (edited.inversion is None) == (made.method == "sdedit")
    assert (edited.pcs is not None) == bool(made.pcs.components)
    if edited.pcs is not None:
        assert edited.pcs.count == 2


@pytest.mark.parametrize("case", RUNS)
def test_run_request_edits_a_picture(case: str, image_editor, picture: Image.Image) -> None:
    changes, count, _ = RUNS[case]
    made = request(**changes, cfg_src=3.5, cfg_tar=15.0)
    made.check()
    edited = run_request(image_editor, made, picture)
    assert len(edited.outputs) == count and all(image.size == (32, 32) for image in edited.outputs)


def test_run_request_reuses_what_it_is_given(audio_editor, clip: Path, tmp_path: Path) -> None:
    """A given inversion is edited without inverting, given components are moved along without
    finding them; masks come from a region, a file or DiffEdit, and the stages see them."""
    first = run_request(audio_editor, request(targets=(), pcs=PCOptions(components=(1,), iterations=2)), clip)
    stages, hooks = _recorder()
    again = run_request(audio_editor, request(targets=(), pcs=PCOptions(components=(1,), amounts=(2.0,))), None,
                        first.inversion, loaded_pcs=first.pcs, stages=hooks)  # fmt: skip
    assert stages == ["edit"] and again.pcs is first.pcs and again.inversion is first.inversion
    assert np.allclose(again.outputs[0], first.outputs[0], atol=1e-5)  # the default amount, 2

    region = run_request(audio_editor, request(mask=MaskChoice(region={"seconds": (0.2, 0.6)})), None, first.inversion)
    assert region.mask.shape == (1, 1, *first.inversion.x0.shape[2:]) and 0 < region.mask.mean() < 1
    audio_editor.save_mask(region.mask, tmp_path / "mask.png", first.inversion)
    from_file = run_request(audio_editor, request(mask=MaskChoice(file=str(tmp_path / "mask.png"))), None, first.inversion)
    assert torch.equal(from_file.mask, region.mask) and np.array_equal(from_file.outputs[0], region.outputs[0])

    seen: list[tuple[object, object]] = []
    stages, hooks = _recorder()
    hooks = dataclasses.replace(hooks, masked=lambda mask, inv: seen.append((mask, inv)))
    auto = run_request(audio_editor, request(mask=MaskChoice(auto=True)), None, first.inversion, stages=hooks)
    assert stages == ["mask", "edit"] and seen == [(auto.mask, first.inversion)]
    with pytest.raises(TypeError, match="as typed"):
        run_request(audio_editor, request(mask=MaskChoice(region="0.2:0.6s")), None, first.inversion)


def test_the_inverted_stage_may_replace_the_inversion(audio_editor, clip: Path) -> None:
    """What the ``inverted`` stage returns is what the run edits (the demo's host-memory copy)."""
    copies = []

    def keep(inversion):
        copies.append(inversion.to("cpu"))
        return copies[-1]

    edited = run_request(audio_editor, request(), clip, stages=Stages(inverted=keep))
    assert edited.inversion is copies[0] and len(edited.outputs) == 1
