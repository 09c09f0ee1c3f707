"""Rebuild the synthetic alert tones described in README.md (standard library only)."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

RATE_HZ = 16_000
FADE_S = 0.010


def tones(parts: list[tuple[float, float]], level: float) -> bytes:
    """`parts` are (frequency in Hz, or 0 for silence; seconds), played in order."""
    frames = bytearray()
    for freq, seconds in parts:
        count = int(RATE_HZ * seconds)
        fade = int(RATE_HZ * FADE_S)
        for i in range(count):
            envelope = min(1.0, i / fade, (count - 1 - i) / fade) if freq else 0.0
            sample = level * envelope * math.sin(2 * math.pi * freq * i / RATE_HZ)
            frames += struct.pack("<h", int(sample * 32767))
    return bytes(frames)


def write(path: Path, data: bytes) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE_HZ)
        out.writeframes(data)


def main() -> None:
    here = Path(__file__).resolve().parent
    write(here / "critical-alert.wav",
          tones([(880, 0.18), (0, 0.06), (660, 0.18)], 0.5))
    write(here / "critical-escalation.wav",
          tones([(1046, 0.12), (0, 0.05)] * 2 + [(1046, 0.12)], 0.9))


if __name__ == "__main__":
    main()
