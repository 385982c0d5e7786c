"""Edit examples/melody.flac into several styles with one inversion.

    python examples/edit_melody.py                 # cvssp/audioldm2-music (downloaded once, ~5 GB)
    python examples/edit_melody.py --model tiny    # random weights: checks the path offline in seconds

Writes examples/out/melody_<style>.wav (or into --out) and prints their paths.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from audio_edit import AudioEditor, load_audio, save_audio

HERE = Path(__file__).parent
TARGETS = ["jazz piano", "a string quartet", "an electric guitar solo with drums", "8-bit chiptune"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cvssp/audioldm2-music")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--tstart", type=int, default=100)
    parser.add_argument("--out", type=Path, default=HERE / "out", help="output folder")
    args = parser.parse_args()

    clip = load_audio(HERE / "melody.flac")
    editor = AudioEditor.from_pretrained(args.model)
    inv = editor.invert(clip, source_prompt="a plucked guitar melody with bass", num_steps=args.steps, t_start=args.tstart)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for target, wave in zip(TARGETS, editor.edit(inv, TARGETS, cfg_tar=12.0)):
        path = out / f"melody_{target.replace(' ', '-')}.wav"
        save_audio(path, wave, clip.sample_rate)
        print(path)


if __name__ == "__main__":
    main()
