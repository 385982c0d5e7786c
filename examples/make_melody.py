"""Synthesise examples/melody.flac: 8 s of a plucked-string melody over a bass line (CC0).

Karplus-Strong plucked strings (a delay line with a low-pass in its loop) playing a melody in A minor
over a bass line, with a soft kick on each beat; 44.1 kHz stereo (the two voices panned apart).
Run: python examples/make_melody.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 44100
BEAT = 0.5  # seconds (120 bpm)
MELODY = [69, 72, 76, 74, 72, 71, 69, 64, 65, 69, 72, 71, 69, 67, 64, 69]  # MIDI notes, one per beat
BASS = [45, 45, 40, 40, 41, 41, 43, 43, 45, 45, 40, 40, 41, 41, 40, 45]


def pluck(midi: int, seconds: float, rng: np.random.Generator, brightness: float = 0.5) -> np.ndarray:
    """One Karplus-Strong note."""
    freq = 440.0 * 2 ** ((midi - 69) / 12)
    period = int(round(RATE / freq))
    n = int(seconds * RATE)
    line = rng.uniform(-1, 1, period)
    out = np.empty(n)
    for i in range(n):
        out[i] = line[i % period]
        line[i % period] = 0.996 * (brightness * line[i % period] + (1 - brightness) * line[(i + 1) % period])
    return out * np.exp(-np.arange(n) / (RATE * seconds))


def kick(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return np.sin(2 * np.pi * (50 + 80 * np.exp(-t * 30)) * t) * np.exp(-t * 12)


def main() -> None:
    rng = np.random.default_rng(7)
    total = int(len(MELODY) * BEAT * RATE) + int(1.2 * RATE)
    lead, bass = np.zeros(total), np.zeros(total)
    for beat, (note, low) in enumerate(zip(MELODY, BASS)):
        start = int(beat * BEAT * RATE)
        tone = pluck(note, 1.2, rng)
        lead[start : start + len(tone)] += tone
        low_tone = pluck(low, 1.0, rng, brightness=0.7)
        bass[start : start + len(low_tone)] += low_tone
        drum = kick(0.3)
        bass[start : start + len(drum)] += 0.6 * drum
    left, right = 0.7 * lead + 0.3 * bass, 0.3 * lead + 0.7 * bass
    stereo = np.stack([left, right], axis=1)
    stereo *= 0.8 / np.abs(stereo).max()
    sf.write(Path(__file__).with_name("melody.flac"), stereo.astype(np.float32), RATE, subtype="PCM_16")


if __name__ == "__main__":
    main()
