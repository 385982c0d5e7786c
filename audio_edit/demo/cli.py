"""The command line of the demo: ``audio-edit-demo`` (or ``python -m audio_edit.demo``) loads a model
and serves the page."""

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any

from image_core.cli_common import Parser, quiet_hub_logging
from image_core.errors import EditError

from .. import defaults as paper
from .cache import DEFAULT_CACHE_MB
from .options import DEFAULT_MAX_SECONDS
from .page import _import_gradio, _one_line, build_app


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = Parser(
        prog="audio-edit-demo",
        description="Start a browser demo for editing recordings with text (AudioLDM 2, Stable Audio Open or "
        "ACE-Step; edit-friendly DDPM inversion, FlowEdit and more).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", default=paper.MODEL, metavar="ID|PATH|tiny",
                        help="hub id (e.g. stabilityai/stable-audio-open-1.0 for 44.1 kHz stereo, "
                        "ACE-Step/acestep-v15-xl-turbo-diffusers for 48 kHz stereo), local folder, or the random "
                        "'tiny', 'tiny-sao' or 'tiny-acestep' model (meaningless output, for trying the page); the "
                        "page presets the settings for the model (the audio paper's where it has them)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 makes the demo reachable from other machines")
    parser.add_argument("--port", type=_port, default=7860, help="port to listen on")
    parser.add_argument("--share", action="store_true", help="also make a temporary public link through Gradio's share servers")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--max-seconds", type=_positive, default=DEFAULT_MAX_SECONDS, metavar="S",
                        help="longest clip accepted, in seconds (an edit's time grows with the length; at most the "
                        "model's window for a model that edits one window only)")
    parser.add_argument("--cache-mb", type=_non_negative, default=DEFAULT_CACHE_MB, metavar="MB",
                        help="MiB of inversions kept in host memory to reuse (0 keeps none)")
    return parser.parse_args(argv)


def _positive(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: give a number above 0")
    return value


def _non_negative(text: str) -> float:
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: give a number of 0 or more")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: give a finite number")
    return value


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: give a number from 1 to 65535") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {port}: give a number from 1 to 65535")
    return port


def serve(demo: Any, host: str, port: int, share: bool) -> None:
    """Start the app and block until interrupted, with the demo's own console lines.

    Gradio's launch messages are turned off (``quiet=True``): they suggest ``share=True`` in
    ``launch()``, which a user of this command cannot pass. Instead one line gives the local URL and
    says to add ``--share`` for a public link; with ``--share`` Gradio still prints the public URL
    (or why it could not make one).
    """
    demo.launch(server_name=host, server_port=port, share=share, quiet=True, prevent_thread_lock=True)
    local_url = getattr(demo, "local_url", None) or f"http://{host}:{port}/"
    print(served_line(local_url, share, getattr(demo, "share_url", None)), flush=True)
    demo.block_thread()


def served_line(local_url: str, share: bool, share_url: str | None = None) -> str:
    """The console line of a served demo: its local URL, and how to get a public link when it has none."""
    line = f"* Running on local URL: {local_url}"
    if share_url:
        return line
    if share:
        return f"{line} (no public link: see the message above)"
    return f"{line} (add --share for a public link)"


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``audio-edit-demo``."""
    args = parse_args(argv)
    _import_gradio()
    quiet_hub_logging()
    from ..editor import AudioEditor

    try:
        editor = AudioEditor.from_pretrained(args.model, device=args.device)
        demo = build_app(editor, cache_mb=args.cache_mb, max_seconds=args.max_seconds)
    except EditError as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        sys.exit(2)
    try:
        serve(demo, args.host, args.port, args.share)
    except OSError as error:
        reason = "the port is in use" if "empty port" in str(error) else _one_line(error)
        print(f"error: cannot serve the demo on {args.host}:{args.port} ({reason}); choose another --port or --host",
              file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        pass
