"""Silero VAD (a recurrent model: convolutions, then an LSTM inside an If) on real speech.

The model is the `silero-vad` PyPI package's opset-15 export; the speech is the eight spoken
channel names and the pink noise that Debian's alsa-utils ships (`make speech` puts them in
build/speech). A stream interleaves the clips, at random gains, with stretches of noise; the
model reads it as ONNX Runtime users run it: 512 new samples plus 64 of context per call, the
LSTM state carried from one call to the next.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

MODEL = "data/silero_vad_16k_op15.onnx"  # 16 kHz only, the network in the main graph
DEFAULT_EXPORT = "data/silero_vad.onnx"  # the package's default: all of it inside If(sr == 16000)
RATE = 16_000
CHUNK, CONTEXT = 512, 64
SPEECH_DIR = Path(os.environ.get("LOWPREC_SPEECH", Path(__file__).resolve().parents[1] / "build" / "speech"))

Run = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def model_path(export: str = MODEL) -> Path:
    spec = importlib.util.find_spec("silero_vad")  # found without importing it (it wants torch)
    if spec is None or spec.origin is None:
        raise FileNotFoundError("silero-vad is not installed: make venv (pip install --no-deps silero-vad)")
    return Path(spec.origin).parent / export


def _read(path: Path) -> np.ndarray:
    with wave.open(str(path)) as clip:
        if (clip.getnchannels(), clip.getsampwidth(), clip.getframerate()) != (1, 2, 48_000):
            raise ValueError(f"{path}: expected 16-bit mono at 48 kHz")
        pcm = np.frombuffer(clip.readframes(clip.getnframes()), np.int16).astype(np.float32) / 32768
    pcm = pcm[: len(pcm) // 3 * 3]
    return pcm.reshape(-1, 3).mean(axis=1)  # 48 kHz -> 16 kHz, a 3-tap average against aliasing


@functools.cache
def clips() -> tuple[list[np.ndarray], np.ndarray]:
    """(the speech clips, the noise), at 16 kHz."""
    files = sorted(SPEECH_DIR.glob("*.wav"))
    if not files:
        raise FileNotFoundError(f"no speech recordings in {SPEECH_DIR}: run `make speech` (Debian's alsa-utils sounds)")
    speech = [_read(f) for f in files if f.stem != "Noise"]
    return speech, _read(SPEECH_DIR / "Noise.wav")


def stream(seed: int) -> np.ndarray:
    """Every clip once, in a seeded order and at seeded gains, between 0.3-1.2 s of noise."""
    speech, noise = clips()
    rng = np.random.default_rng(seed)
    parts = []
    for index in rng.permutation(len(speech)):
        gap = int(rng.uniform(0.3, 1.2) * RATE)
        parts.append(np.resize(noise, gap) * rng.uniform(0.0, 0.05))
        clip = speech[index]
        parts.append(clip * rng.uniform(0.3, 1.0) + np.resize(noise, len(clip)) * rng.uniform(0.0, 0.02))
    return np.concatenate(parts).astype(np.float32)


def run_stream(run: Run, audio: np.ndarray) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """Speech probability per 32 ms chunk, and the feed each call received."""
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros(CONTEXT, np.float32)
    probs, feeds = [], []
    for start in range(0, len(audio) - CHUNK + 1, CHUNK):
        chunk = audio[start : start + CHUNK]
        feed = {"input": np.concatenate([context, chunk])[None], "state": state, "sr": np.array(RATE, np.int64)}
        prob, state = run(feed)[:2]
        probs.append(float(prob.ravel()[0]))
        feeds.append(feed)
        context = chunk[-CONTEXT:]
    return np.array(probs), feeds


def batch(feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Calls stacked into one batch: the state's batch axis is its second."""
    return {
        "input": np.concatenate([f["input"] for f in feeds]),
        "state": np.concatenate([f["state"] for f in feeds], axis=1),
        "sr": np.array(RATE, np.int64),
    }


def calibration(run: Run, seed: int = 1, size: int = 16) -> list[dict[str, np.ndarray]]:
    """Batches of calls on one stream, each with the state the FP32 model had there."""
    _, feeds = run_stream(run, stream(seed))
    return [batch(feeds[i : i + size]) for i in range(0, len(feeds) - size + 1, size)]


def agreement(fp32: Run, int8: Run, seeds: tuple[int, ...] = (2, 3, 4)) -> dict[str, float]:
    """Share of chunks where both models make the same speech/no-speech call at 0.5, and the
    mean absolute difference of their probabilities, over fresh streams."""
    streams = [stream(s) for s in seeds]
    ref = np.concatenate([run_stream(fp32, audio)[0] for audio in streams])
    got = np.concatenate([run_stream(int8, audio)[0] for audio in streams])
    return {"agree": float(np.mean((ref > 0.5) == (got > 0.5))), "mad": float(np.mean(np.abs(ref - got))), "speech": float(np.mean(ref > 0.5))}
