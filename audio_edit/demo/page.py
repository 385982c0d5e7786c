"""The Gradio page around a :class:`~audio_edit.demo.runner.DemoRunner` (:func:`build_app`): its texts,
its controls and the handlers that run the jobs from a bounded queue."""

# No ``from __future__ import annotations`` here: Gradio reads the handlers' annotations (gr.Request)
# at run time, and those name the gradio module imported inside build_app.

import functools
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from image_core.errors import EditError, InputError
from image_core.schedule import Schedule
from image_core.settings import MAX_SEED

from .cache import DEFAULT_CACHE_MB
from .checks import check_clip, page_concepts
from .options import (
    DEFAULT_MAX_SECONDS, DEFAULT_STRENGTH, DEFAULTS, MAX_AMOUNT, MAX_COMPONENTS, MAX_CONCEPTS, MAX_PC_ITERATIONS,
    MAX_STRENGTH, MAX_VARIATIONS, METHODS, P2P_MODES, model_name, model_presets,
)
from .runner import DemoRunner, EditCancelled, one_window_seconds

if TYPE_CHECKING:
    import gradio as gr

    from ..editor import AudioEditor

GRADIO_MISSING = "the demo needs gradio: pip install '.[demo]'"

_QUEUE_SIZE = 16  # waiting jobs beyond this are refused with "queue full"
_CACHE_CLEANUP = (3600, 6 * 3600)  # gradio deletes its cached files older than 6 h, checking hourly

log = logging.getLogger(__name__)


_INTRO = """\
# Edit a recording with text
Upload or record a clip of at most {max_seconds:g} s, describe what it should become (*target*), and
listen to the original, its reconstruction and the edits. The clip is inverted once (the slow part);
change only the target or its guidance and only the edit runs again. Cancel drops your waiting edit,
or stops the running one after its current stage. Method: edit-friendly DDPM inversion with {model}
(Manor & Michaeli, *Zero-Shot Unsupervised and Text-Based Audio Editing Using DDPM Inversion*, ICML 2024);
DDIM inversion, SDEdit and FlowEdit are there to compare with, and an automatic DiffEdit mask can keep the edit
to where the target and source descriptions disagree; Prompt-to-Prompt edits with the source
description's attention, so the words that stay keep their place in the clip. Concepts add or remove things besides, or instead
of, the target (LEDITS semantic guidance). With no prompt at all, the last section moves the clip along
the principal components of the posterior.{note}
"""

_STEREO_NOTE = """

{model} edits {khz:g} kHz stereo: the reconstruction and the edits are stereo at the clip's rate
(a mono clip becomes two equal channels). Its latent has no frequency axis, so the automatic mask keeps
time ranges (no mask picture), and Prompt-to-Prompt controls its DiT's attention to the words (the
attention picture is drawn over its latent).{presets}
"""

_STEREO_MODELS = {
    "Stable Audio Open": "",
    "ACE-Step": " Its presets (few steps, guidance 1 on turbo checkpoints) are the model's own, not the audio paper's.",
}
"""The models that edit stereo (the note the page shows for each), and what the note adds about their presets."""

_CONCEPTS_HELP = """Add or remove up to three concepts (LEDITS semantic guidance), e.g. *drums* to remove. Each guides
the edit where it differs most from the clip; with concepts the target may stay empty (the source
description is kept). Each concept adds one model evaluation per step. Needs an inversion (not SDEdit or FlowEdit).
"""

_PCS_INTRO = """## No prompt: principal components
The directions in which the model is least sure of the clip, found at the edit's first step with no
text: moving along one changes, say, the timbre or the rhythm. Press *Find components* to invert the clip
(with the method, source description, steps, t_start, source guidance and seed above, one variation) and
find them; then change only the component or the amount and only the move runs again. Amount 0 gives the
reconstruction. On a CPU each iteration is one batched model call: fewer iterations are faster and less
precise.
"""

_METHOD_HELP = """- **DDPM inversion** (default): keeps the clip's structure and reconstructs it exactly; use it to edit.
- **DDIM inversion**: the deterministic baseline (one variation); less faithful to the clip under guidance.
- **Null-text inversion**: DDIM inversion whose unconditional branch is optimised at every step for the
  target guidance (one variation); closer to the clip than DDIM under that guidance, about ten times the
  model calls, and a new inversion whenever the target guidance changes.
- **SDEdit**: noises the clip to t_start and generates the target from there; keeps less of the clip, and
  inverts nothing (no reconstruction, nothing reused).
- **FlowEdit**: moves the clip straight to the target along the difference of the target's and the source's
  predictions over the last t_start steps (its n_max), with no inversion (no reconstruction, nothing reused,
  no automatic mask or concepts); describe the clip as the source. Its n_min and n_avg are its paper's 0 and 1.
- **Prompt-to-Prompt**: DDPM inversion (shared with the first method), edited with the attention to the
  source description's words for the first steps; describe the clip as the source and change a few words
  for the target. Its settings are under *Advanced: Prompt-to-Prompt*; no concepts or automatic mask.
"""

_P2P_HELP = """For the method Prompt-to-Prompt only. Describe the clip in the source description (e.g. *a
recording of a guitar*) and change a few words in the target (*a recording of a piano*): the target's rows
take the source's attention maps, so the words that stay attend where they did. **Mode**: *Replace* swaps
words one for one and needs descriptions of the same number of tokens; *Refine* aligns the target's tokens
to the source's, for words added or changed; *Automatic* replaces when the two descriptions have the same
number of tokens and refines otherwise. After a Prompt-to-Prompt edit of a clip {short}, a
picture shows each word's attention over the clip's spectrogram.
"""

_READY = "Upload or record a clip, type a target description and press Edit."

_HELP = {
    "source": "Optional: what the clip is now, e.g. 'a recording of a guitar'. Guides the inversion.",
    "target": "What the clip should become, e.g. 'jazz piano'.",
    "lyrics": "Optional: the words the clip sings (with a source description, which they go with); empty: "
    "instrumental. Part of the inversion's condition.",
    "target_lyrics": "Optional: the words the edit sings instead (a lyrics edit: the target, or without one the "
    "source description, sung with these).",
    "steps": "Diffusion steps of the full chain. More steps: finer but slower.",
    "t_start": "Steps the edit runs (at most steps; FlowEdit's n_max). Higher: a stronger edit that keeps less of "
               "the original.",
    "cfg_src": "How strongly the source description guides the inversion, or FlowEdit's source branch ({value:g} "
    "{origin} {model}). Null-text inversion optimises for the target guidance instead (for principal components: for "
    "this one).",
    "cfg_tar": "How strongly the edit follows the target. Higher: more of the target, less of the original.",
    "seed": "Seed of the inversion noise. Another seed gives another take on the same edit.",
    "variations": "Edits with seeds seed, seed+1, ... played side by side; each one adds to the run time.",
    "auto_mask": "Edit only where the target and source descriptions disagree (DiffEdit; the mask is shown "
                 "next to the spectrograms) and keep the rest of the clip exactly. With an inversion only.",
    "concept": "A concept to add or remove, e.g. 'drums'. Leave empty for none.",
    "strength": "How strongly the concept guides the edit (10 in LEDITS; 0 turns it off).",
    "threshold": "Share of each channel's cells a concept leaves alone: 0.95 guides the 5% where it differs most.",
    "warmup": "Edit steps before the concepts start guiding (below t_start).",
    "components": "How many components to find, largest variance first.",
    "pc": "Which component to move along (1 = the largest variance).",
    "amount": "How far to move, in standard deviations, to either side (2 in the paper's evaluation).",
    "time_range": "Optional 'start:end' in seconds, e.g. '0.5:2': components of that part of the clip only.",
    "iterations": "Most subspace iterations (default 50). On a CPU each is one batched model call: "
                  "fewer are faster and less precise.",
    "p2p_mode": "Automatic: Replace for descriptions of the same number of tokens, else Refine.",
    "cross_steps": "Share of the steps whose cross-attention (to the words) comes from the source (0.6 "
                   "for DDPM inversion). Higher: more of the clip's structure, less of the target.",
    "self_steps": "Share of the steps whose self-attention comes from the source (0.2 for DDPM inversion). "
                  "Higher: closer to the clip's timing.",
    "reweight": "Optional 'word=factor, ...' for words of the target, e.g. 'piano=2': more (or, below 1, "
                "less) of that word.",
    "blend": "Optional words, e.g. 'guitar, piano': edit only where they attend and keep the rest of the "
             "clip. For clips {short}.",
}


def _import_gradio() -> Any:
    try:
        import gradio
    except ImportError:
        print(GRADIO_MISSING, file=sys.stderr)
        sys.exit(2)
    return gradio


def build_app(
    editor: "AudioEditor",
    max_upload_mb: float = 50,
    cache_mb: float = DEFAULT_CACHE_MB,
    *,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    defaults: Mapping[str, Any] | None = None,
    output_dir: str | Path | None = None,
) -> "gr.Blocks":
    """The Gradio app around ``editor``; start it with ``.launch()``.

    Jobs are queued and run one at a time. Uploads and recordings are checked at once, outside the
    queue. ``launch()`` of the returned app limits uploads to ``max_upload_mb`` megabytes unless given
    another ``max_file_size``. The editor's tqdm bars are turned on: the page follows them.

    Args:
        editor: the ``AudioEditor`` to run.
        max_upload_mb: largest accepted upload in megabytes.
        cache_mb: MiB of inversions kept in host memory over all sessions (least recently used dropped
            first); default :data:`DEFAULT_CACHE_MB`.
        max_seconds: longest clip accepted, in seconds; default :data:`DEFAULT_MAX_SECONDS`, at most the
            model's window for a model that edits one window only (:func:`model_max_seconds`).
        defaults: preset values of the controls, overriding the model's (:func:`model_presets`: the
            audio paper's steps, t_start and guidance for ``editor``'s model) and :data:`DEFAULTS` (keys steps, t_start,
            cfg_src, cfg_tar, seed, variations, method, auto_mask, concept_threshold, concept_warmup,
            components, amount, iterations, p2p_mode, cross_steps, self_steps).
        output_dir: where outputs are written; a temporary folder by default.
    """
    gr = _import_gradio()
    preset = {**DEFAULTS, **model_presets(editor), **(defaults or {})}
    unknown = set(preset) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown defaults {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    if preset["method"] not in METHODS:
        raise ValueError(f"unknown default method {preset['method']!r}; known: {sorted(METHODS)}")
    if preset["p2p_mode"] not in P2P_MODES:
        raise ValueError(f"unknown default Prompt-to-Prompt mode {preset['p2p_mode']!r}; known: {sorted(P2P_MODES)}")
    if max_upload_mb <= 0:
        raise ValueError(f"max_upload_mb must be positive, got {max_upload_mb}")
    runner = DemoRunner(editor, cache_mb, output_dir, max_seconds)
    editor.progress = True
    window = one_window_seconds(editor)
    short = "of one model window" if window is None else f"of at most {window:g} s (one model window)"
    name = model_name(editor)
    note = "" if name not in _STEREO_MODELS else _STEREO_NOTE.format(
        model=name, khz=editor.model.sample_rate / 1000, presets=_STEREO_MODELS[name])
    origin = "in the audio paper for" if name != "ACE-Step" else "preset for"

    with gr.Blocks(title="Audio editing with text", delete_cache=_CACHE_CLEANUP) as demo:
        gr.Markdown(_INTRO.format(max_seconds=runner.max_seconds, model=name, note=note), elem_id="intro")
        with gr.Row():
            with gr.Column(scale=3):
                clip = gr.Audio(
                    sources=["upload", "microphone"], type="filepath",
                    label=f"Original (at most {runner.max_seconds:g} s)", buttons=["download"], elem_id="input-audio",
                )
                target = gr.Textbox(label="Target description", info=_HELP["target"], placeholder="jazz piano",
                                    max_lines=2, elem_id="target")
                concept_rows = []  # text, add or remove, strength of each row: on_edit takes three rows
                with gr.Accordion("Concepts (optional)", open=True, elem_id="concepts"):
                    gr.Markdown(_CONCEPTS_HELP)
                    for index in range(MAX_CONCEPTS):
                        with gr.Row(equal_height=True):
                            concept_rows += [
                                gr.Textbox(label=f"Concept {index + 1}", info=_HELP["concept"] if index == 0 else None,
                                           max_lines=1, scale=3, elem_id=f"concept-{index}"),
                                gr.Radio([("add", "add"), ("remove", "remove")], value="add", label="Add or remove",
                                         scale=2, elem_id=f"concept-{index}-sign"),
                                gr.Slider(0, MAX_STRENGTH, value=DEFAULT_STRENGTH, step=0.5, label="Strength",
                                          info=_HELP["strength"] if index == 0 else None, scale=3,
                                          elem_id=f"concept-{index}-strength"),
                            ]
                    with gr.Accordion("Advanced", open=False, elem_id="concepts-advanced"):
                        threshold = gr.Slider(0, 0.99, value=preset["concept_threshold"], step=0.01,
                                              label="Threshold", info=_HELP["threshold"], elem_id="concept-threshold")
                        warmup = gr.Slider(0, max(preset["steps"], 1), value=preset["concept_warmup"], step=1,
                                           label="Warm-up (steps)", info=_HELP["warmup"], elem_id="concept-warmup")
                source = gr.Textbox(label="Source description (optional)", info=_HELP["source"], max_lines=2,
                                    elem_id="source")
                with gr.Accordion("Lyrics (optional)", open=False, visible=name == "ACE-Step", elem_id="lyrics"):
                    lyrics = gr.Textbox(label="Lyrics the clip sings", info=_HELP["lyrics"], lines=3, elem_id="lyrics-source")
                    target_lyrics = gr.Textbox(label="Lyrics of the edit", info=_HELP["target_lyrics"], lines=3,
                                               elem_id="lyrics-target")
                method = gr.Radio([(label, value) for value, label in METHODS.items()], value=preset["method"],
                                  label="Method", elem_id="method")
                gr.Markdown(_METHOD_HELP, elem_id="method-help")
                auto_mask = gr.Checkbox(value=bool(preset["auto_mask"]), label="Automatic mask (DiffEdit)",
                                        info=_HELP["auto_mask"], elem_id="auto-mask")
                with gr.Accordion("Advanced: Prompt-to-Prompt", open=False, elem_id="p2p-advanced"):
                    gr.Markdown(_P2P_HELP.format(short=short), elem_id="p2p-help")
                    p2p_mode = gr.Radio([(label, value) for value, label in P2P_MODES.items()],
                                        value=preset["p2p_mode"], label="Mode", info=_HELP["p2p_mode"],
                                        elem_id="p2p-mode")
                    with gr.Row():
                        cross_steps = gr.Slider(0, 1, value=preset["cross_steps"], step=0.05,
                                                label="Cross-attention steps", info=_HELP["cross_steps"],
                                                elem_id="p2p-cross")
                        self_steps = gr.Slider(0, 1, value=preset["self_steps"], step=0.05,
                                               label="Self-attention steps", info=_HELP["self_steps"],
                                               elem_id="p2p-self")
                    with gr.Row():
                        reweight = gr.Textbox(label="Reweight (optional)", info=_HELP["reweight"],
                                              placeholder="piano=2", max_lines=1, elem_id="p2p-reweight")
                        blend = gr.Textbox(label="Local blend words (optional)", info=_HELP["blend"].format(short=short),
                                           placeholder="guitar, piano", max_lines=1, elem_id="p2p-blend")
                with gr.Row():
                    run = gr.Button("Edit", variant="primary", elem_id="run")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
            with gr.Column(scale=2):
                most = Schedule.max_steps(editor.model.scheduler_config)
                steps = gr.Slider(1, most, value=preset["steps"], step=1, label="Steps", info=_HELP["steps"])
                t_start = gr.Slider(1, max(preset["steps"], 1), value=preset["t_start"], step=1, label="t_start",
                                    info=_HELP["t_start"])
                cfg_src = gr.Slider(0, 20, value=preset["cfg_src"], step=0.5, label="Source guidance (cfg_src)",
                                    info=_HELP["cfg_src"].format(value=preset["cfg_src"], origin=origin, model=name))
                cfg_tar = gr.Slider(0, 30, value=preset["cfg_tar"], step=0.5, label="Target guidance (cfg_tar)",
                                    info=_HELP["cfg_tar"])
                with gr.Row():
                    seed = gr.Number(value=preset["seed"], precision=0, minimum=0, maximum=MAX_SEED, label="Seed", info=_HELP["seed"])
                    variations = gr.Slider(1, MAX_VARIATIONS, value=preset["variations"], step=1,
                                           label="Variations", info=_HELP["variations"])
        status = gr.Textbox(label="Status", interactive=False, max_lines=3, elem_id="status", value=_READY)
        with gr.Row():
            reconstruction = gr.Audio(label="Reconstruction (from the inversion, no edit)", type="filepath",
                                      interactive=False, buttons=["download"], elem_id="reconstruction")
        with gr.Row():
            edits = [
                gr.Audio(label=f"Edit {index + 1}", type="filepath", interactive=False, buttons=["download"],
                         visible=index == 0, elem_id=f"edit-{index}")
                for index in range(MAX_VARIATIONS)
            ]
        with gr.Row():
            spectrogram = gr.Image(label="Spectrograms", type="filepath", interactive=False, elem_id="spectrograms",
                                   buttons=["download", "fullscreen"], scale=3)
            mask_picture = gr.Image(label="Automatic mask (edited where bright)", type="filepath",
                                    interactive=False, elem_id="mask", buttons=["download", "fullscreen"],
                                    visible=False, scale=1)
        attention_picture = gr.Image(label="Attention of each word over the clip (Prompt-to-Prompt)",
                                     type="filepath", interactive=False, elem_id="attention",
                                     buttons=["download", "fullscreen"], visible=False)

        gr.Markdown(_PCS_INTRO, elem_id="pcs-intro")
        with gr.Row():
            components = gr.Slider(1, MAX_COMPONENTS, value=preset["components"], step=1, label="Components",
                                   info=_HELP["components"], elem_id="pc-count")
            pc = gr.Slider(1, preset["components"], value=1, step=1, label="Component to move", info=_HELP["pc"],
                           elem_id="pc")
            amount = gr.Slider(0, MAX_AMOUNT, value=preset["amount"], step=0.1, label="Amount (σ)",
                               info=_HELP["amount"], elem_id="pc-amount")
        with gr.Row():
            time_range = gr.Textbox(label="Time range (optional)", info=_HELP["time_range"], placeholder="0.5:2",
                                    max_lines=1, elem_id="pc-range")
            iterations = gr.Slider(1, MAX_PC_ITERATIONS, value=preset["iterations"], step=1, label="Iterations",
                                   info=_HELP["iterations"], elem_id="pc-iterations")
        find = gr.Button("Find components", variant="primary", elem_id="pc-run")
        pc_values = gr.Markdown("", elem_id="pc-values")
        with gr.Row():
            moved = [
                gr.Audio(label=f"Component moved {side}", type="filepath", interactive=False, buttons=["download"],
                         elem_id=f"pc-{side}")
                for side in ("minus", "plus")
            ]
        pc_spectrogram = gr.Image(label="Spectrograms: original, moved", type="filepath", interactive=False,
                                  elem_id="pc-spectrograms", buttons=["download", "fullscreen"])

        def on_steps(steps_value: float, t_start_value: float) -> Any:
            top = max(int(steps_value), 1)
            return gr.Slider(maximum=top, value=min(int(t_start_value), top))

        def on_components(count: float, pc_value: float) -> Any:
            top = max(int(count), 1)
            return gr.Slider(maximum=top, value=min(int(pc_value), top))

        def on_upload(audio_path: str | None) -> tuple[str, Any]:
            """Status line for a new upload or recording; a refused clip is taken off the page."""
            if not audio_path:
                return _READY, gr.skip()
            try:
                return check_clip(audio_path, runner.max_seconds), gr.skip()
            except InputError as error:
                return f"Error: {_one_line(error)}", None

        def on_cancel(request: gr.Request) -> str:
            stopped = runner.cancel(getattr(request, "session_hash", None) or "")
            return "Cancelled: the running edit stops after its current stage." if stopped else "Cancelled."

        def on_edit(
            audio_path: str | None, target_text: str, source_text: str, steps_value: float, t_start_value: float,
            cfg_src_value: float, cfg_tar_value: float, seed_value: float | None, variations_value: float,
            method_value: str | None, auto_mask_value: bool, threshold_value: float, warmup_value: float,
            concept_1: str, sign_1: str, strength_1: float, concept_2: str, sign_2: str, strength_2: float,
            concept_3: str, sign_3: str, strength_3: float, p2p_mode_value: str | None, cross_steps_value: float,
            self_steps_value: float, reweight_text: str | None, blend_text: str | None,
            request: gr.Request, lyrics_text: str | None = "", target_lyrics_text: str | None = "",
            progress: gr.Progress = gr.Progress(track_tqdm=True),
        ) -> list[Any]:
            rows = [(concept_1, sign_1, strength_1), (concept_2, sign_2, strength_2), (concept_3, sign_3, strength_3)]
            try:
                result = runner.run(
                    audio_path, target_text, source_text, steps_value, t_start_value, cfg_src_value,
                    cfg_tar_value, 0 if seed_value is None else seed_value, variations_value,
                    method_value, bool(auto_mask_value), session=getattr(request, "session_hash", None) or "",
                    report=lambda fraction, text: progress(fraction, desc=text),
                    concepts=page_concepts(rows, threshold_value, warmup_value), p2p_mode=p2p_mode_value,
                    cross_steps=cross_steps_value, self_steps=self_steps_value, reweight=reweight_text or "",
                    blend=blend_text or "", lyrics=lyrics_text or "", target_lyrics=target_lyrics_text or "",
                )
            except EditCancelled:
                return _failure(gr, "Cancelled.")
            except EditError as error:
                return _failure(gr, f"Error: {_one_line(error)}")
            except Exception as error:  # noqa: BLE001 - the page gets one line, the log the traceback
                return _failure(gr, _unexpected(error, "the edit", "fewer variations, fewer steps or a shorter clip"))
            slots = [
                gr.Audio(value=str(file), label=label, visible=True) for label, file in result.edits
            ] + [gr.Audio(value=None, visible=False) for _ in range(MAX_VARIATIONS - len(result.edits))]
            if result.reconstruction is None:  # SDEdit, FlowEdit: nothing inverted, nothing to reconstruct
                reconstructed = gr.Audio(value=None, visible=False)
            else:
                reconstructed = gr.Audio(value=str(result.reconstruction), visible=True)
            if result.mask is None:
                mask_shown = gr.Image(value=None, visible=False)
            else:
                mask_shown = gr.Image(value=str(result.mask), visible=True)
            if result.attention is None:
                attention_shown = gr.Image(value=None, visible=False)
            else:
                attention_shown = gr.Image(value=str(result.attention), visible=True)
            return [result.status, reconstructed, *slots, str(result.spectrogram), mask_shown, attention_shown]

        def components_run(only_cached: bool) -> Callable[..., list[Any]]:
            """The handler of Find components (``only_cached`` False) or of a slider's move (True: a
            move only where the components are cached, otherwise nothing changes)."""

            def on_components_run(
                audio_path: str | None, source_text: str, steps_value: float, t_start_value: float,
                cfg_src_value: float, seed_value: float | None, method_value: str | None, count: float,
                pc_value: float, amount_value: float, range_text: str, iterations_value: float,
                request: gr.Request, lyrics_text: str | None = "", progress: gr.Progress = gr.Progress(track_tqdm=True),
            ) -> list[Any]:
                if only_cached and not audio_path:
                    return [gr.skip()] * 5
                try:
                    result = runner.components(
                        audio_path, source_text, steps_value, t_start_value, cfg_src_value,
                        0 if seed_value is None else seed_value, method_value, count, pc_value, amount_value,
                        range_text, iterations_value, session=getattr(request, "session_hash", None) or "",
                        report=lambda fraction, text: progress(fraction, desc=text), only_cached=only_cached,
                        lyrics=lyrics_text or "",
                    )
                except EditCancelled:
                    return _pcs_failure("Cancelled.")
                except EditError as error:
                    return _pcs_failure(f"Error: {_one_line(error)}")
                except Exception as error:  # noqa: BLE001 - the page gets one line, the log the traceback
                    lighter = "fewer components, fewer steps or a shorter clip"
                    return _pcs_failure(_unexpected(error, "the components", lighter))
                if result is None:  # a slider moved before the components were found: nothing to move
                    return [gr.skip()] * 5
                (minus_label, minus), (plus_label, plus) = result.clips
                table = "| Component | Variance |\n|---|---|\n" + "\n".join(
                    f"| {index + 1} | {value:.4g} |" for index, value in enumerate(result.values))
                return [result.status, table, gr.Audio(value=str(minus), label=minus_label),
                        gr.Audio(value=str(plus), label=plus_label), str(result.spectrogram)]

            return on_components_run

        def _pcs_failure(message: str) -> list[Any]:
            return [message, "", None, None, None]

        steps.release(on_steps, [steps, t_start], t_start, queue=False, show_progress="hidden")
        steps.release(on_steps, [steps, warmup], warmup, queue=False, show_progress="hidden")
        components.release(on_components, [components, pc], pc, queue=False, show_progress="hidden")
        for added in (clip.upload, clip.stop_recording):
            added(on_upload, clip, [status, clip], queue=False, show_progress="hidden")
        inputs = [clip, target, source, steps, t_start, cfg_src, cfg_tar, seed, variations, method, auto_mask,
                  threshold, warmup, *concept_rows, p2p_mode, cross_steps, self_steps, reweight, blend, lyrics, target_lyrics]
        outputs = [status, reconstruction, *edits, spectrogram, mask_picture, attention_picture]
        jobs = [trigger(on_edit, inputs, outputs, concurrency_limit=1, concurrency_id="jobs")
                for trigger in (run.click, target.submit)]
        pc_inputs = [clip, source, steps, t_start, cfg_src, seed, method, components, pc, amount, time_range, iterations, lyrics]
        pc_outputs = [status, pc_values, *moved, pc_spectrogram]
        jobs += [trigger(components_run(only_cached), pc_inputs, pc_outputs, concurrency_limit=1, concurrency_id="jobs")
                 for trigger, only_cached in ((find.click, False), (time_range.submit, False),
                                              (pc.release, True), (amount.release, True))]
        cancel.click(on_cancel, None, status, queue=False, show_progress="hidden", cancels=jobs)

    demo.queue(default_concurrency_limit=1, max_size=_QUEUE_SIZE)
    demo.runner = runner  # for inspection (tests, notebooks)
    demo.launch = functools.partial(demo.launch, max_file_size=f"{max_upload_mb * 1024 * 1024:.0f}b")
    return demo


def _failure(gr: Any, message: str) -> list[Any]:
    """Outputs for a run that failed: the message in the status line, the outputs cleared."""
    slots = [gr.Audio(value=None, visible=index == 0) for index in range(MAX_VARIATIONS)]
    hidden = [gr.Image(value=None, visible=False) for _ in range(2)]  # the mask and attention pictures
    return [message, gr.Audio(value=None, visible=True), *slots, None, *hidden]


def _unexpected(error: BaseException, what: str, lighter: str) -> str:
    """The status line for an error no input explains (logged with its traceback)."""
    log.exception("%s failed", what)
    if "OutOfMemoryError" in type(error).__name__:
        return f"Error: out of memory; use {lighter}."
    return f"Error: {what} failed ({type(error).__name__}); see the server log."


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
