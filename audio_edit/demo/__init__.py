"""A browser demo for listening to text-based edits of recordings (``audio-edit-demo``).

Someone uploads or records a clip, describes what it should become, and hears the original, the
reconstruction from the inversion and up to four edits side by side, with their spectrograms. The
method is a choice: edit-friendly DDPM inversion (the default), DDIM inversion (the deterministic
baseline, one variation), null-text inversion (DDIM inversion with its unconditional branch optimised
for the target guidance, one variation), SDEdit or FlowEdit (nothing inverted, so no reconstruction;
FlowEdit's n_max is the page's t_start, its n_min and n_avg its paper's 0 and 1). With any inversion an
automatic DiffEdit mask can limit the edit to where the target and source descriptions disagree; the
page then shows the mask over the clip's spectrogram. Concepts (LEDITS semantic guidance) add or
remove up to three things besides, or instead of, the target description. Prompt-to-Prompt edits a
DDPM inversion with the source description's attention (its mode, injection fractions, reweighting
and local blend under Advanced), and draws each word's attention over a clip of one model window.

The page follows the editor's model: AudioLDM 2 (16 kHz mono), Stable Audio Open (44.1 kHz stereo) or
ACE-Step (48 kHz stereo); the stereo models' reconstruction and edits are stereo at the clip's rate.
With ACE-Step the page also takes the clip's lyrics (in the inversion's cache key) and the lyrics the
edit sings instead (a lyrics edit).
The steps, t_start and guidance it presets are the model's (:func:`model_presets`: the audio paper's,
source guidance 3 for AudioLDM 2 and 1 for Stable Audio Open; 8 steps, t_start 6 and guidance 1 for
ACE-Step's turbo checkpoints), and a model that edits one window only caps the clip length at that
window (:func:`model_max_seconds`). What a model cannot do is refused in one line: the stereo models'
automatic mask, over time alone, has no picture (their Prompt-to-Prompt runs on the DiT, its
attention drawn over the latent).

With no prompt at all, the page finds the top principal components of the posterior at the edit's
first step (optionally within a time range) and plays the clip moved along a chosen one, by minus and
plus a chosen amount of standard deviations (Manor & Michaeli, ICML 2024). The components are cached
with the inversion, so changing only the component or the amount re-runs only that move.

An upload is checked at once, outside the queue (readable audio, a supported rate, at most
``max_seconds`` long), so a bad file is refused without waiting behind the edits of others. The
inversion is the slow part. :class:`DemoRunner` keeps inversions in host memory (an LRU bounded in
bytes, keyed by the browser session, the clip's content hash and every setting the inversion depends
on, the method included), so changing only the target description, its guidance scale or the
concepts re-runs only the edit (and the automatic mask, which depends on the target); it drops the
least recently used ones before an inversion that would not fit in the free memory. The Gradio app
runs one job at a time from a bounded queue; Cancel drops a waiting job and stops a running one after
its current stage.

Gradio is an optional dependency (``pip install '.[demo]'``); it is imported only when the app is built.

Modules:

- ``options``: the settings the page offers, their bounds and preset values (:data:`DEFAULTS`, and
  the model's: :func:`model_presets`), the clip length a model takes (:func:`model_max_seconds`), and
  the methods (:data:`METHODS`).
- ``checks``: checks of an upload (:func:`check_clip`), of the page's concept rows
  (:func:`page_concepts`), time range (:func:`parse_time_range`) and Prompt-to-Prompt settings
  (:func:`p2p_options`, and :func:`p2p_prompts` against the model's tokenizer); the ``EditRequest`` of the page's
  values (:func:`edit_request`, :func:`components_request`), which ``check_request`` checks in the
  page's words (:data:`PAGE`) and ``run_request`` runs.
- ``cache``: the inversion cache (:class:`InversionCache` of :class:`CachedInversion` under an
  :class:`InversionKey`; principal components under a :class:`ComponentsKey`) and the byte accounting
  of inversions (:func:`tensor_bytes`, :func:`inversion_bytes`).
- ``outputs``: what a run gives back (:class:`RunResult`, :class:`ComponentsResult`), the files it
  writes and its status line.
- ``runner``: :class:`DemoRunner`, which runs the jobs one at a time and cancels them
  (:class:`EditCancelled`).
- ``page``: the Gradio page, :func:`build_app`.
- ``cli``: the command line, :func:`parse_args` and :func:`main` (``python -m audio_edit.demo`` runs it).
"""

from .cache import (
    DEFAULT_CACHE_MB, KEPT_COMPONENT_SETS, MIB, CachedInversion, ComponentsKey, InversionCache, InversionKey,
    inversion_bytes, tensor_bytes,
)
from .checks import (
    PAGE, check_clip, components_request, edit_request, p2p_options, p2p_prompts, page_concepts, parse_time_range,
)
from .cli import main, parse_args
from .options import (
    DEFAULT_MAX_SECONDS, DEFAULT_STRENGTH, DEFAULTS, INVERSION_METHODS, MAX_AMOUNT, MAX_COMPONENTS, MAX_CONCEPTS,
    MAX_PC_ITERATIONS, MAX_STRENGTH, MAX_VARIATIONS, METHODS, P2P_MODES, model_max_seconds, model_name, model_presets,
)
from .outputs import ComponentsResult, RunResult, describe_edit, mask_share
from .page import GRADIO_MISSING, build_app
from .runner import DemoRunner, EditCancelled

__all__ = [
    "CachedInversion", "ComponentsKey", "ComponentsResult", "DEFAULTS", "DEFAULT_CACHE_MB", "DEFAULT_MAX_SECONDS",
    "DEFAULT_STRENGTH", "DemoRunner", "EditCancelled", "GRADIO_MISSING", "INVERSION_METHODS", "InversionCache",
    "InversionKey", "KEPT_COMPONENT_SETS", "MAX_AMOUNT", "MAX_COMPONENTS", "MAX_CONCEPTS", "MAX_PC_ITERATIONS",
    "MAX_STRENGTH", "MAX_VARIATIONS", "METHODS", "MIB", "P2P_MODES", "PAGE", "RunResult", "build_app", "check_clip",
    "components_request", "describe_edit", "edit_request", "inversion_bytes", "main", "mask_share",
    "model_max_seconds", "model_name", "model_presets",
    "p2p_options", "p2p_prompts", "page_concepts", "parse_args", "parse_time_range", "tensor_bytes",
]
