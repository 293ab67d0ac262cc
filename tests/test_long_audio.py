"""Long audio in bounded memory (issue 11): windowed voiceprints, a capped dataset decoder.

The voiceprint step used to cost memory in proportion to the clip (1 h: 4.1 GB peak). These tests
check that the windowed embedding is the same voiceprint, that its peak memory does not grow with
the length, and that ``decode_audio_bytes`` refuses oversized rows from their header.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import pestalk_hf
from pestalk_hf import voiceprint as vp
from pestalk_hf.audio import AudioError, load_audio
from pestalk_hf.data.schema import MAX_CLIP_SECONDS, decode_audio_bytes, encode_flac

DEMO = Path(pestalk_hf.__file__).parent / "assets" / "demo_ljspeech_LJ001-0107.wav"


def _long_speech(seconds: float) -> np.ndarray:
    """The packaged LJSpeech clip (real speech) repeated with 0.5 s pauses and varying gain."""
    clip = load_audio(DEMO)
    rng = np.random.default_rng(0)
    pieces, total = [], 0
    while total < seconds * 16000:
        pieces += [clip * np.float32(rng.uniform(0.4, 1.0)), np.zeros(8000, np.float32)]
        total += len(clip) + 8000
    return np.concatenate(pieces)[: int(seconds * 16000)]


@pytest.fixture(scope="module")
def resemblyzer() -> vp.ResemblyzerBackend:
    return vp.ResemblyzerBackend()


def test_voiceprint_windows_cover_the_clip_without_slivers() -> None:
    for n, w in [(10, 100), (100, 100), (101, 100), (1_000_001, 960_000), (5_760_000, 960_000)]:
        windows = vp.voiceprint_windows(n, w)
        assert windows[0].start == 0 and windows[-1].stop == n
        assert all(a.stop == b.start for a, b in zip(windows, windows[1:]))
        lengths = [s.stop - s.start for s in windows]
        assert max(lengths) <= w and len(windows) == -(-n // w)
        if len(windows) > 1:
            assert min(lengths) >= w // 2  # no tiny tail window dominated by padding


def test_windowed_voiceprint_equals_whole_clip_voiceprint(resemblyzer, monkeypatch) -> None:
    """150 s of speech (3 windows) → the same voiceprint as processing the clip in one piece."""
    wav = _long_speech(150)
    windowed = resemblyzer.embed(wav)
    monkeypatch.setattr(vp, "_RZ_WINDOW_SAMPLES", 10**9)  # one window: the pre-windowing algorithm
    whole = resemblyzer.embed(wav)
    assert float(windowed @ whole) > 0.999
    short = wav[: 20 * 16000]
    short_whole = resemblyzer.embed(short)
    monkeypatch.undo()
    np.testing.assert_allclose(resemblyzer.embed(short), short_whole, atol=1e-6)  # one window: as before
    assert float(short_whole @ windowed) > 0.9  # same speaker throughout
    # a long stretch of near-silence (VAD finds nothing) does not dilute the voiceprint
    padded = np.concatenate([wav, np.random.default_rng(1).normal(0, 2e-4, 130 * 16000).astype(np.float32)])
    assert float(resemblyzer.embed(padded) @ windowed) > 0.99


_CHILD = r"""
import json, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[2])
from test_long_audio import _long_speech
from pestalk_hf.voiceprint import ResemblyzerBackend
backend = ResemblyzerBackend()
backend.embed(_long_speech(5))
wav = _long_speech(float(sys.argv[1]))
def kb(field):
    return next(int(l.split()[1]) for l in Path('/proc/self/status').read_text().splitlines() if l.startswith(field + ':'))
base = kb('VmRSS')
Path('/proc/self/clear_refs').write_text('5')
backend.embed(wav)
print(json.dumps({'above_mb': (kb('VmHWM') - base) / 1024}))
"""


def test_voiceprint_peak_memory_does_not_grow_with_length() -> None:
    """Peak RSS above the loaded clip: 10 min of speech costs about what 1 min costs (it cost ×10)."""
    def above(seconds: float) -> float:
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(seconds), str(Path(__file__).parent)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])["above_mb"]

    short, long = above(60), above(600)
    # before windowing 10 min took ~0.7 GB above the clip; now one window's worth (< 150 MB) at any length
    assert long < 150, (short, long)
    assert long < short + 60, (short, long)


def test_decode_audio_bytes_contract() -> None:
    wav = _long_speech(3)
    decoded, rate = decode_audio_bytes(encode_flac(wav))
    assert rate == 16000 and decoded.dtype == np.float32 and decoded.shape == wav.shape
    np.testing.assert_allclose(decoded, wav, atol=1 / 32768 + 1e-6)
    buf = io.BytesIO()  # 48 kHz stereo → 16 kHz mono, channels averaged
    sf.write(buf, np.stack([np.repeat(wav, 3), np.zeros(3 * len(wav), np.float32)], 1), 48000, format="WAV")
    stereo, rate = decode_audio_bytes(buf.getvalue())
    assert rate == 16000 and abs(len(stereo) - len(wav)) <= 2
    silent, _ = decode_audio_bytes(encode_flac(np.zeros(800, np.float32)))  # stored content is not judged
    assert silent.shape == (800,) and not silent.any()


def test_decode_audio_bytes_refuses_oversized_rows_from_the_header() -> None:
    buf = io.BytesIO()  # 700 s of 8 kHz silence: a few KB of FLAC
    with sf.SoundFile(buf, "w", 8000, 1, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros(8000 * 70, np.float32)
        for _ in range(10):
            f.write(block)
    data = buf.getvalue()
    assert len(data) < 200_000
    t0 = time.perf_counter()
    with pytest.raises(AudioError, match=rf"700\.00 s long; the limit is {MAX_CLIP_SECONDS:g} s"):
        decode_audio_bytes(data)
    assert time.perf_counter() - t0 < 1.0  # refused from the header, nothing decoded
    assert decode_audio_bytes(data, max_seconds=800)[0].shape == (700 * 16000,)
    with pytest.raises(AudioError, match="cannot decode"):
        decode_audio_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    with pytest.raises(AudioError, match="empty"):
        decode_audio_bytes(b"")
