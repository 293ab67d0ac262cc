"""Forced aligner (PocketSphinx, extra ``synth``): text rules, eSpeak fallback, accuracy on CMU ARCTIC."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pestalk_hf.data import aligner as A


def _needs_pocketsphinx():
    pytest.importorskip("pocketsphinx", reason="needs the 'synth' extra: pip install -e '.[synth]'")


def test_normalize_words():
    assert A.normalize_words("He turned, sharply; and faced Gregson!") == ["he", "turned", "sharply", "and", "faced", "gregson"]
    assert A.normalize_words("picture-books — don’t \"cabins\" (one) e.g. U.S.") == [
        "picture", "books", "don't", "cabins", "one", "e", "g", "u", "s"]
    assert A.normalize_words("... !") == []


def test_grid_transcript_drops_silences():
    text = "0 23750 sil\n23750 29500 bin\n29500 34000 blue\n34000 35500 sp\n35500 41000 at\n41000 74500 sil\n"
    assert A.grid_transcript(text) == "bin blue at"
    assert A.grid_transcript("") == ""


def test_ipa_to_arpabet_and_back():
    assert A.ipa_to_arpabet("ˈaɪɚ") == ["AY", "ER"]
    assert A.ipa_to_arpabet("tʃ") == ["CH"]
    assert A.ipa_to_arpabet("ˌɑːɹ") == ["AA", "R"]
    assert A.ipa_to_arpabet("n̩") == ["AH", "N"]
    with pytest.raises(KeyError):
        A.ipa_to_arpabet("ǂ")
    assert set(A.ARPABET_TO_IPA) == set(A.ARPABET) | {A.SIL}


def test_ipa_names_drive_the_viseme_model():
    """Aligned phones converted with to_ipa are understood by synth.phone_visemes (no unmapped symbol)."""
    from pestalk_hf.data.synth import phone_visemes

    for name in sorted(A.ARPABET) + [A.SIL]:
        assert phone_visemes(A.ARPABET_TO_IPA[name])
    assert phone_visemes(A.ARPABET_TO_IPA["P"]) == ("PP",)


def test_espeak_pronounces_oov_words():
    assert A.espeak_arpabet("pestalk")[:3] == ["P", "EH", "S"]
    assert "N" in A.espeak_arpabet("1990")  # numbers are spoken ("nineteen ninety")


def _a0009(assets):
    import soundfile as sf

    folder = assets / "speech" / "cmu_arctic"
    wav, sr = sf.read(str(folder / "arctic_a0009.wav"), dtype="float32")
    return wav, sr, A.read_hts_labels(folder / "arctic_a0009_phone.lab")


A0009 = "He turned sharply, and faced Gregson across the table."


def test_a0009_boundaries_match_hts_labels(assets, capsys):
    """Median phone-boundary error against ARCTIC's labels (measured: 10 ms median, 13 ms mean, 100 % match)."""
    _needs_pocketsphinx()
    wav, sr, ref = _a0009(assets)
    result = A.Aligner().align(wav, sr, A0009)
    errors, matched = A.boundary_errors(result.phones, ref)
    with capsys.disabled():
        print(f"\na0009: {len(errors)} boundaries, median {np.median(errors) * 1000:.0f} ms, "
              f"mean {errors.mean() * 1000:.0f} ms, p90 {np.percentile(errors, 90) * 1000:.0f} ms, "
              f"phone match {matched:.0%}")
    assert matched >= 0.9
    assert np.median(errors) < 0.03
    assert np.percentile(errors, 90) < 0.06
    assert [w for w, _, _ in result.words] == A.normalize_words(A0009)
    # the phones tile the clip and every word's phones lie inside the word
    assert result.phones[0].start == 0.0 and abs(result.phones[-1].end - len(wav) / sr) < 0.011
    assert all(a.end == pytest.approx(b.start) for a, b in zip(result.phones, result.phones[1:]))
    for p in result.phones:
        assert p.name in A.ARPABET or (p.name == A.SIL and p.word == -1)
        if p.word >= 0:
            w, s, e = result.words[p.word]
            assert s - 1e-6 <= p.start and p.end <= e + 1e-6


def test_oov_word_falls_back_to_espeak(assets):
    _needs_pocketsphinx()
    wav, sr, _ = _a0009(assets)
    aligner = A.Aligner()
    result = aligner.align(wav, sr, A0009.replace("Gregson", "Gregzonne"))
    assert "gregzonne" in result.oov and result.oov["gregzonne"].startswith("G R EH G")
    assert [w for w, _, _ in result.words][5] == "gregzonne"


def test_errors_are_clear(assets):
    _needs_pocketsphinx()
    wav, sr, _ = _a0009(assets)
    aligner = A.Aligner()
    with pytest.raises(A.AlignmentError, match="no words"):
        aligner.align(wav, sr, "...")
    with pytest.raises(A.AlignmentError):
        aligner.align(wav[: sr // 2], sr, A0009)  # half a second cannot hold the sentence
    with pytest.raises(A.AlignmentError, match="NaN"):
        aligner.align(np.full(1600, np.nan, np.float32), sr, "he")


def test_align_resamples_other_rates(assets):
    _needs_pocketsphinx()
    import soxr

    wav, sr, ref = _a0009(assets)
    wav44 = soxr.resample(wav, sr, 44100)
    errors, matched = A.boundary_errors(A.align(wav44, 44100, A0009), ref)
    assert matched >= 0.9 and np.median(errors) < 0.03


def _ljspeech_folder(assets, folder, audio_name: str, missing_name: str):
    """An LJSpeech-shaped folder: ARCTIC a0009 as ``audio_name`` and a metadata row without audio."""
    _needs_pocketsphinx()
    folder.mkdir()
    shutil.copy(assets / "speech" / "cmu_arctic" / "arctic_a0009.wav", folder / audio_name)
    (folder / "metadata.csv").write_text(
        "file,text,normalized_text,seconds,original_sample_rate\n"
        f'{audio_name},"{A0009}","{A0009}",3.095,16000\n'
        f'{missing_name},"No audio.","No audio.",1.0,16000\n')
    return folder


def test_align_ljspeech_cache_is_resumable(assets, tmp_path):
    folder = _ljspeech_folder(assets, tmp_path / "lj", "a.wav", "missing.wav")
    out = tmp_path / "cache.json"
    summary = A.align_ljspeech(folder, out)
    assert summary["aligned_now"] == 1 and summary["failed"] == 1
    data = json.loads(out.read_text())
    assert data["clips"]["a.wav"]["words"][0][0] == "he" and "missing.wav" in data["failed"]
    again = A.align_ljspeech(folder, out)
    assert again["aligned_now"] == 0 and again["total"] == 1
    phones = A.load_alignment_cache(out)["a.wav"]
    assert phones[1].name == "HH"


def test_align_ljspeech_reads_only_the_chapters_asked_for(assets, tmp_path):
    folder = _ljspeech_folder(assets, tmp_path / "lj", "LJ001-0001.wav", "LJ003-0001.wav")  # LJ003 would fail
    summary = A.align_ljspeech(folder, tmp_path / "cache.json", chapters=A.LJSPEECH_TEST_CHAPTERS)
    assert summary["aligned_now"] == 1 and summary["failed"] == 0
    assert A.ljspeech_chapter("LJ003-0001.flac") == "LJ003" == A.ljspeech_chapter("/x/y/LJ003-0001")
