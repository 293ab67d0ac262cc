"""Augmentation (issue 14 point 4) and the real-speech training mix (points 2–3, 5)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from pestalk_hf.data.augment import (
    AugmentConfig,
    add_noise,
    add_reverb,
    apply_gain,
    augment_clip,
    lossy_codec,
    speed_perturb,
    synthetic_room_impulse,
    telephone,
)
from pestalk_hf.data.real_mix import (
    VisemeCalibration,
    built_labels,
    fit_viseme_calibration,
    parse_lablaut,
    rest_pose_from_labels,
    sampa_to_ipa,
    speech_activity,
)
from pestalk_hf.data.schema import ARKIT_BLENDSHAPE_NAMES, SAMPLING_RATE, num_frames_for

SR = SAMPLING_RATE
JAW = ARKIT_BLENDSHAPE_NAMES.index("jawOpen")


def _tone(seconds: float = 1.0, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return float(spec[(f >= lo) & (f < hi)].sum())


@pytest.mark.parametrize("snr", [5.0, 20.0])
def test_noise_is_added_at_the_requested_snr(snr):
    rng = np.random.default_rng(0)
    x = _tone()
    y = add_noise(x, snr, rng)
    measured = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y - x).astype(np.float64) ** 2))
    assert abs(measured - snr) < 0.5


def test_reverb_decays_at_the_requested_rt60():
    rng = np.random.default_rng(0)
    rir = synthetic_room_impulse(0.5, rng)
    assert rir[0] == 1.0 and len(rir) == SR // 2
    energy = np.cumsum((rir[1:] ** 2)[::-1])[::-1]  # Schroeder integral of the tail
    edc = 10 * np.log10(energy / energy[0])
    t = np.arange(len(edc)) / SR
    slope = np.polyfit(t[(edc < -5) & (edc > -25)], edc[(edc < -5) & (edc > -25)], 1)[0]
    assert -60 / 0.38 < slope < -60 / 0.65  # −60 dB per RT60 (±30 %)
    y = add_reverb(_tone(), 0.5, rng)
    assert y.shape == (SR,) and np.abs(y).max() <= 1.0 and not np.allclose(y, _tone())


def test_telephone_removes_low_and_high_frequencies():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(SR) * 0.1).astype(np.float32)
    y = telephone(x)
    assert y.shape == x.shape
    assert _band_energy(y, 0, 150) < 0.05 * _band_energy(x, 0, 150)
    assert _band_energy(y, 4500, 8000) < 0.01 * _band_energy(x, 4500, 8000)
    assert _band_energy(y, 800, 2500) > 0.5 * _band_energy(x, 800, 2500)


def test_mp3_round_trip_keeps_length_and_alignment():
    x = _tone(1.0, 440.0)
    y = lossy_codec(x, "mp3", 32000)
    assert y.shape == x.shape
    lag = np.argmax(np.correlate(y[2000:6000], x[2000:2100], "valid"))
    assert np.corrcoef(y[2000:-2000], x[2000:-2000])[0, 1] > 0.9, f"misaligned by {lag}"


def test_speed_perturbation_keeps_audio_and_labels_aligned():
    x = np.zeros(SR * 2, np.float32)
    x[SR:SR + 800] = 0.5  # a click at 1.0 s
    labels = np.zeros((num_frames_for(len(x)), 52), np.float32)
    labels[30, JAW] = 1.0  # the jaw opens on the frame of the click
    y, lab = speed_perturb(x, labels, 1.25)
    assert lab.shape == (num_frames_for(len(y)), 52)
    click_t = np.argmax(np.abs(y)) / SR
    jaw_t = (np.argmax(lab[:, JAW]) + 0.5) / 30
    assert abs(click_t - 0.8) < 0.02 and abs(jaw_t - click_t) < 1.5 / 30


def test_gain_clips_and_augment_chain_is_deterministic():
    assert np.abs(apply_gain(_tone(), 20.0)).max() == pytest.approx(1.0)
    x, labels = _tone(2.0), np.random.default_rng(0).random((60, 52)).astype(np.float32)
    a = augment_clip(x, labels, np.random.default_rng(7))
    b = augment_clip(x, labels, np.random.default_rng(7))
    assert a[2] == b[2] and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[1].shape == (num_frames_for(len(a[0])), 52)
    always = AugmentConfig(p_speed=1.0, p_noise=1.0, p_reverb=1.0, p_telephone=1.0, p_codec=1.0)
    _, _, steps = augment_clip(x, labels, np.random.default_rng(0), always)
    assert [re.match(r"[a-z]+", s).group() for s in steps] == ["speed", "reverb", "telephone", "noise", "mp", "gain"]


LABLAUT = """signal x
nfields 1
#
    0.080000   -1 _t
    0.120000   -1 !t	+asp
    0.150000   -1 E6
    0.250000   -1 m	+sil
    0.300000   -1 	+hoe
    0.350000   -1 a:
    0.500000   -1 p
    0.560000   -1 !p	+na
    0.600000   -1 pasp
    0.650000   -1 aI	+lar	3
    0.900000   -1 .
"""


def test_lablaut_parser_merges_consonant_parts_and_stops_at_the_end():
    phones = parse_lablaut(LABLAUT)
    assert [p.name for p in phones] == ["t", "ɛɐ", "m", "a", "p", "aɪ"]
    t, _, m, a, p, ai = phones
    assert (t.start, t.end) == (0.08, 0.15) and (p.start, p.end) == (0.5, 0.65)
    assert (m.start, m.end) == (0.25, 0.35)  # the marker-only line continues the /m/
    assert ai.end == 0.9
    cut = parse_lablaut(LABLAUT, end_time=0.55)
    assert [p.name for p in cut] == ["t", "ɛɐ", "m", "a", "p"] and cut[-1].end == 0.55
    assert sampa_to_ipa("+hoe") is None and sampa_to_ipa("S") == "ʃ" and sampa_to_ipa("kasp") == "k"


def test_built_built_labels_close_the_lips_on_bilabials_and_rest_in_silence():
    rest = np.zeros(52, np.float32)
    rest[JAW] = 0.05
    wav = np.zeros(3 * SR // 2, np.float32)
    labels = built_labels(parse_lablaut(LABLAUT), wav, "happy", rest, np.random.default_rng(0))
    assert labels.shape == (45, 52) and labels.min() >= 0 and labels.max() <= 1
    jaw = labels[:, JAW]
    p_frame = int(0.575 * 30)  # the centre of /p/
    assert jaw[int(0.4 * 30)] > jaw[p_frame] + 0.1  # /a:/ open, /p/ nearly closed
    close = labels[:, ARKIT_BLENDSHAPE_NAMES.index("mouthClose")]
    assert jaw[p_frame] <= 0.15 and close[p_frame] >= jaw[p_frame] - 1e-6  # lips touch
    assert abs(jaw[-1] - 0.05) < 0.02  # rest pose after the speech
    smile = labels[:, ARKIT_BLENDSHAPE_NAMES.index("mouthSmileLeft")]
    assert smile.mean() > 0.2  # the happy prototype is on
    assert np.all(labels[:, ARKIT_BLENDSHAPE_NAMES.index("tongueOut")] == 0)


def _phones(spec: str, step: float = 0.12, start: float = 0.3):
    """IPA phones ``"m a i s u"`` of ``step`` seconds each from ``start``; ``''`` is a pause."""
    from pestalk_hf.data.synth import Phone

    return [Phone("" if name == "''" else name, start + k * step, start + (k + 1) * step, 0)
            for k, name in enumerate(spec.split())]


def test_speech_activity_is_one_in_phones_and_zero_in_long_pauses():
    phones = _phones("m a '' '' '' '' '' s u", step=0.1)  # '' = a 0.5 s pause between two words
    act = speech_activity(phones, 45, sigma_frames=0)
    assert act[int(0.35 * 30)] == 1 and act[int(0.75 * 30)] == 0 and act[0] == 0
    smooth = speech_activity(phones, 45)
    assert 0 < smooth[int(0.51 * 30)] < 1 and smooth[int(0.8 * 30)] < 0.05  # eases out, rests in the pause


def test_viseme_calibration_recovers_known_gains_offsets_and_closure():
    """Labels made as rest + gain × visemes + offset × activity (lips closed with the jaw 0.03 above rest)
    give those numbers back; a channel the face never moves gets 0, a Left/Right pair shares one fit, a
    channel the viseme model never drives keeps gain 1 and gets only its talking offset."""
    from pestalk_hf.data.synth import close_lips_on_bilabials, viseme_curves

    idx = {n: i for i, n in enumerate(ARKIT_BLENDSHAPE_NAMES)}
    true = {"jawOpen": (0.6, 0.09), "mouthStretchLeft": (0.1, 0.0), "mouthStretchRight": (0.1, 0.0),
            "mouthPucker": (0.5, 0.0), "mouthRollUpper": (0.0, 0.04), "mouthSmileLeft": (0.0, 0.01),
            "mouthSmileRight": (0.0, 0.01), "mouthLowerDownLeft": (0.2, 0.0), "mouthLowerDownRight": (0.4, 0.0)}
    rest = np.zeros(52, np.float32)
    rest[JAW], rest[idx["mouthRollUpper"]] = 0.02, 0.05
    tracks = []
    for spec in ("'' m a i s u ''", "'' b i w ɑ p ''", "'' s ɛ t ɔ f ''", "'' ɑ ɪ t e ''"):
        phones = _phones(spec)
        x, act = viseme_curves(phones, 30), speech_activity(phones, 30)
        labels = np.repeat(rest[None], 30, axis=0)
        for name, (g, b) in true.items():
            labels[:, idx[name]] += g * x[:, idx[name]] + b * act
        tracks.append((labels, phones))
    cal = fit_viseme_calibration(tracks, rest)
    gains, offset = cal.gains, cal.speech_offset
    for name in ("jawOpen", "mouthPucker", "mouthStretchLeft", "mouthStretchRight"):
        assert gains[idx[name]] == pytest.approx(true[name][0], abs=1e-3), name
        assert offset[idx[name]] == pytest.approx(true[name][1], abs=1e-3), name
    lower = gains[idx["mouthLowerDownLeft"]]
    assert lower == gains[idx["mouthLowerDownRight"]] and 0.2 < lower < 0.4  # pooled
    assert gains[idx["mouthFunnel"]] == pytest.approx(0.0, abs=1e-6)  # driven by /u ɔ w/, never moved here
    assert gains[idx["mouthSmileLeft"]] == 1.0 and offset[idx["mouthSmileLeft"]] == pytest.approx(0.01, abs=1e-4)
    assert offset[idx["mouthRollUpper"]] == pytest.approx(0.04, abs=1e-3)
    assert gains[idx["browInnerUp"]] == 1.0 and offset[idx["browInnerUp"]] == 0.0  # not the lower face
    # the closure: the same faces with the jaw brought to 0.03 above rest on /m b p/
    closed = [(close_lips_on_bilabials(lab, ph, max_jaw=0.03), ph) for lab, ph in tracks]
    assert fit_viseme_calibration(closed, rest).closure_jaw == pytest.approx(0.03, abs=0.01)
    json_ = cal.to_json()
    assert set(json_) == {"gains", "speech_offset", "closure_jaw"} and "browInnerUp" not in json_["gains"]


def test_built_labels_follow_the_calibration_and_still_close_the_lips():
    from pestalk_hf.blendshapes import lip_aperture

    stretch = ARKIT_BLENDSHAPE_NAMES.index("mouthStretchLeft")
    phones = _phones("'' s i m i s ''")
    wav = np.zeros(SR, np.float32)
    rest = np.zeros(52, np.float32)
    raw = built_labels(phones, wav, "neutral", rest, np.random.default_rng(0))
    gains, offset = np.ones(52, np.float32), np.zeros(52, np.float32)
    gains[stretch], offset[JAW] = 0.1, 0.08
    cal = VisemeCalibration(gains, offset, closure_jaw=0.02)
    scaled = built_labels(phones, wav, "neutral", rest, np.random.default_rng(0), calibration=cal)
    assert raw[:, stretch].max() > 0.3
    np.testing.assert_allclose(scaled[:, stretch], 0.1 * raw[:, stretch], atol=1e-6)
    i_frame = int(round(30 * (phones[2].start + phones[2].end) / 2))
    assert scaled[i_frame, JAW] == pytest.approx(raw[i_frame, JAW] + 0.08, abs=0.01)  # talking posture
    m = int(round(30 * (phones[3].start + phones[3].end) / 2))
    assert lip_aperture(scaled)[m] < 0.05 and scaled[m, JAW] <= 0.02 + 1e-6  # the /m/ closes with the jaw low
    assert scaled[0, JAW] == pytest.approx(0.0, abs=0.01)  # at rest before the speech


def test_rest_pose_is_measured_on_quiet_frames_only():
    wav = np.concatenate([np.zeros(SR // 2, np.float32), _tone(0.5)])
    labels = np.zeros((30, 52), np.float32)
    labels[:15, JAW] = 0.02  # silent half
    labels[15:, JAW] = 0.6  # speaking half
    rest = rest_pose_from_labels([(wav, labels)])
    assert rest[JAW] == pytest.approx(0.02, abs=1e-6)


def test_rest_pose_is_the_median_quiet_frame_not_pulled_by_onsets():
    """Quiet frames where the mouth already opens for speech (a few, wide open) must not move the rest."""
    wav = np.concatenate([np.zeros(SR, np.float32), _tone(0.5)])
    labels = np.zeros((45, 52), np.float32)
    labels[:30, JAW] = 0.02
    labels[24:30, JAW] = 0.3  # the last 0.2 s of silence: opening before the first word
    labels[30:, JAW] = 0.6
    rest = rest_pose_from_labels([(wav, labels)])
    assert rest[JAW] == pytest.approx(0.02, abs=1e-6)  # the mean of the quiet frames would be 0.076


def _tiny_grid_dataset(folder: Path) -> Path:
    """A two-clip 3D-EmoStyle folder: half a second at rest (jawOpen 0.03), then a tone with the jaw open."""
    from pestalk_hf.data.schema import make_row, write_parquet_shard

    rows = []
    for i in range(2):
        wav = np.concatenate([np.zeros(SR // 2, np.float32), _tone(1.0, 150 + 50 * i)])
        lab = np.zeros((num_frames_for(len(wav)), 52), np.float32)
        lab[:, JAW] = np.where(np.arange(len(lab)) < 15, 0.03, 0.3)
        rows.append(make_row(id=f"g{i}", waveform=wav, blendshapes=lab, speaker="s1", emotion="neutral", source="grid"))
    write_parquet_shard(rows, folder / "data" / "train-00000.parquet")
    test = dict(rows[0], id="g_test")  # held-out sentences are other clips, with other ids
    write_parquet_shard([test], folder / "data" / "test-00000.parquet")
    return folder


def test_real_mix_from_a_tiny_grid_dataset_and_real_emodb(tmp_path, assets):
    """Build the mix from a two-clip 3D-EmoStyle folder and the real EmoDB folder; read it back."""
    from pestalk_hf.data.loading import load_clips
    from pestalk_hf.data.real_mix import RealMixConfig, build_real_mix

    grid = _tiny_grid_dataset(tmp_path / "grid")
    # a small EmoDB: the real labels.csv restricted to 4 clips (two speakers, one of them held out)
    emodb = assets / "speech" / "emodb"
    lines = (emodb / "labels.csv").read_text(encoding="utf-8").splitlines()
    header, body = lines[0], [ln for ln in lines[1:] if ln.startswith(("03a01", "09a01"))][:4]
    small = tmp_path / "emodb"
    small.mkdir()
    (small / "labels.csv").write_text("\n".join([header] + body) + "\n", encoding="utf-8")
    for ln in body:
        name = ln.split(",")[0]
        (small / name).symlink_to(emodb / name)
        (small / name.replace(".wav", ".lablaut")).symlink_to(emodb / name.replace(".wav", ".lablaut"))
    # a neutral TTS folder (eSpeak here; the default mix uses Kokoro voices — the mix does not care which)
    from pestalk_hf.data.synth import SynthConfig, generate

    generate(SynthConfig(num_speakers=1, num_sentences=2, emotions=("neutral",), num_test_speakers=0,
                         num_validation_sentences=0, num_test_sentences=0), tmp_path / "tts")
    summary = build_real_mix(RealMixConfig(grid_dataset=str(grid), emodb_folder=str(small), emodb_holdout=("09",),
                                           grid_copies=1, emodb_copies=1, tts_datasets=(str(tmp_path / "tts"),),
                                           synth_datasets=(str(tmp_path / "tts"),)),
                             tmp_path / "mix", progress=False)
    assert summary["rest_pose"]["jawOpen"] == pytest.approx(0.03, abs=1e-3)
    train = list(load_clips(tmp_path / "mix", split="train"))
    test = list(load_clips(tmp_path / "mix", split="test"))
    assert sum(r["source"] == "grid_s1" for r in train) == 2 and sum(r["source"].startswith("grid_s1_aug") for r in train) == 2
    assert {r["speaker"] for r in test} >= {"emodb09"} and all(r["speaker"] != "emodb09" for r in train)
    for r in train + test:
        assert r["blendshapes"].shape == (num_frames_for(len(r["waveform"])), 52)
    tts = [r for r in train if r["source"] == "tts"]
    assert len(tts) == 2 and all(r["emotion"] == 0 for r in tts)  # neutral
    assert {r["speaker"] for r in tts} == {"tts/synth000"}  # prefixed by the folder: voices never merge
    # rebuilt on GRID's rest pose: the jaw rests at GRID's 0.03 before the speech, opens during it
    jaw = tts[0]["blendshapes"][:, JAW]
    assert abs(jaw[0] - 0.03) < 0.02 and jaw.max() > 0.2
    boredom = sum(",boredom," in ln for ln in body)
    assert summary["skipped_boredom"] == boredom
    # EmoStyle-Synth passes through with its own labels (not rebuilt) under a folder-prefixed speaker
    synth = {r["id"]: r for r in train if r["source"] == "emostyle_synth"}
    original = {r["id"]: r for r in load_clips(tmp_path / "tts", split="train")}
    assert len(synth) == len(original) == 2
    for rid, r in original.items():
        assert np.array_equal(synth["synth_tts_" + rid]["blendshapes"], r["blendshapes"])
        assert synth["synth_tts_" + rid]["speaker"] == "tts/" + r["speaker"]
    # one folder given twice would write every id twice (and give clips each other's voiceprints): refused
    with pytest.raises(ValueError, match="written twice"):
        build_real_mix(RealMixConfig(grid_dataset=str(grid), grid_copies=0,
                                     tts_datasets=(str(tmp_path / "tts"), str(tmp_path / "tts"))),
                       tmp_path / "mix_twice", progress=False)


def test_real_mix_ljspeech_source_aligns_once_and_holds_out_whole_chapters(tmp_path, assets):
    """Two real LJSpeech clips (held-out chapter LJ001, training chapter LJ003): forced-aligned into the
    cache, labels built on the phones (lips closed on /m/ and /p/), the LJ001 clip in ``test`` only."""
    pytest.importorskip("pocketsphinx", reason="needs the 'synth' extra: pip install -e '.[synth]'")
    from pestalk_hf.blendshapes import lip_aperture
    from pestalk_hf.data.aligner import ljspeech_chapter, load_alignment_cache
    from pestalk_hf.data.loading import load_clips
    from pestalk_hf.data.real_mix import RealMixConfig, build_real_mix

    lj = assets / "speech" / "ljspeech"
    lines = (lj / "metadata.csv").read_text(encoding="utf-8").splitlines()
    keep = [ln for ln in lines[1:] if ln.startswith(("LJ001-0009.flac", "LJ003-0003.flac"))]
    assert len(keep) == 2
    small = tmp_path / "lj"
    small.mkdir()
    (small / "metadata.csv").write_text("\n".join([lines[0]] + keep) + "\n", encoding="utf-8")
    for ln in keep:
        (small / ln.split(",")[0]).symlink_to(lj / ln.split(",")[0])
    config = RealMixConfig(grid_dataset=str(_tiny_grid_dataset(tmp_path / "grid")), grid_copies=0,
                           ljspeech_folder=str(small), ljspeech_copies=2)
    summary = build_real_mix(config, tmp_path / "mix", progress=False)
    assert summary["ljspeech_alignment"]["aligned_now"] == 2 and summary["ljspeech_alignment"]["failed"] == 0
    train = [r for r in load_clips(tmp_path / "mix", split="train") if r["source"].startswith("ljspeech")]
    test = [r for r in load_clips(tmp_path / "mix", split="test") if r["source"].startswith("ljspeech")]
    assert [r["id"] for r in test] == ["ljspeech_LJ001-0009"]  # held out, no augmented copies
    assert len(train) == 3 and {ljspeech_chapter(r["id"].removeprefix("ljspeech_").split("_aug")[0]) for r in train} == {"LJ003"}
    assert all(r["speaker"] == "ljspeech" and r["emotion"] == 0 for r in train + test)
    original = next(r for r in train if r["source"] == "ljspeech")
    assert original["sentence"].startswith("Prisoners were committed")
    assert original["blendshapes"].shape == (num_frames_for(len(original["waveform"])), 52)
    # lips closed in the middle of the aligned /m/ of "committed" and /p/ of "capacity"
    phones = load_alignment_cache(tmp_path / "mix" / "ljspeech_alignment.json")["LJ003-0003.flac"]
    aperture = lip_aperture(original["blendshapes"])
    bilabials = [p for p in phones if p.name in ("M", "P")]
    assert len(bilabials) >= 2
    for p in bilabials:
        assert aperture[int(round(30 * (p.start + p.end) / 2))] < 0.1, p
    # a rebuild reuses the cache: nothing is aligned again
    config2 = dataclasses.replace(config, ljspeech_alignment=str(tmp_path / "mix" / "ljspeech_alignment.json"))
    assert build_real_mix(config2, tmp_path / "mix2", progress=False)["ljspeech_alignment"]["aligned_now"] == 0


def test_real_mix_calibrates_built_labels_on_grid_faces(tmp_path, assets):
    """Two real GRID s1 clips (their audio and word alignments) with a face that moves only its jaw, with
    the loudness: the transcripts are forced-aligned once, the fitted gains keep the jaw and silence the
    mouth channels this face never moves, and EmoDB's built labels follow those gains."""
    pytest.importorskip("pocketsphinx", reason="needs the 'synth' extra: pip install -e '.[synth]'")
    import dataclasses

    from pestalk_hf.data.loading import load_clips
    from pestalk_hf.data.real_mix import RealMixConfig, build_real_mix
    from pestalk_hf.data.schema import make_row, write_parquet_shard
    from pestalk_hf.data.synth import loudness_envelope
    from pestalk_hf.data.video_io import decode_audio

    grid_src = assets / "video" / "grid_s1"
    rows = []
    for clip in ("bbaf2n", "bbaf3s"):
        wav, _ = decode_audio(grid_src / f"{clip}.mp4")
        lab = np.zeros((num_frames_for(len(wav)), 52), np.float32)
        lab[:, JAW] = 0.02 + 0.3 * loudness_envelope(wav, len(lab))
        rows.append(make_row(id=clip, waveform=wav, blendshapes=lab, speaker="s1", emotion="neutral", source="grid"))
    write_parquet_shard(rows, tmp_path / "grid" / "data" / "train-00000.parquet")
    emodb = assets / "speech" / "emodb"
    lines = (emodb / "labels.csv").read_text(encoding="utf-8").splitlines()
    body = [ln for ln in lines[1:] if ln.startswith("03a01Fa")]
    small = tmp_path / "emodb"
    small.mkdir()
    (small / "labels.csv").write_text("\n".join([lines[0]] + body) + "\n", encoding="utf-8")
    for ln in body:
        name = ln.split(",")[0]
        (small / name).symlink_to(emodb / name)
        (small / name.replace(".wav", ".lablaut")).symlink_to(emodb / name.replace(".wav", ".lablaut"))
    config = RealMixConfig(grid_dataset=str(tmp_path / "grid"), grid_copies=0, emodb_folder=str(small), emodb_copies=0,
                           emodb_holdout=(), grid_align_dir=str(grid_src / "align"))
    summary = build_real_mix(config, tmp_path / "mix", progress=False)
    assert summary["grid_alignment"]["aligned_now"] == 2 and summary["grid_alignment"]["clips_fitted"] == 2
    cal = summary["viseme_calibration"]
    gains = cal["gains"]
    # the jaw opens with the loudness: while talking, whatever the phone (the talking posture)
    assert cal["speech_offset"]["jawOpen"] > 0.05
    for name in ("mouthStretchLeft", "mouthFunnel", "mouthPucker"):  # never moved
        assert gains[name] == 0.0 and abs(cal["speech_offset"][name]) < 1e-6
    emo = [r for r in load_clips(tmp_path / "mix", split="train") if r["source"] == "emodb"]
    assert len(emo) == len(body) > 0
    for name in ("mouthStretchLeft", "mouthFunnel", "mouthPucker"):  # at rest: GRID's face never moves them
        i = ARKIT_BLENDSHAPE_NAMES.index(name)
        assert np.ptp(emo[0]["blendshapes"][:, i]) < 1e-6, name
    jaw = emo[0]["blendshapes"][:, JAW]
    assert jaw.max() - jaw[0] > 0.05  # opens from the rest pose when the speech starts
    again = build_real_mix(dataclasses.replace(config, grid_alignment=str(tmp_path / "mix" / "grid_alignment.json")),
                           tmp_path / "mix2", progress=False)
    assert again["grid_alignment"]["aligned_now"] == 0 and again["viseme_calibration"] == cal
    with pytest.raises(FileNotFoundError, match="no <id>.align"):
        build_real_mix(dataclasses.replace(config, grid_align_dir=str(tmp_path)), tmp_path / "mix3", progress=False)


@pytest.mark.parametrize("where", ["start", "inside", "end"])
def test_inserted_pause_is_silent_and_labelled_at_rest(where):
    from pestalk_hf.data.augment import insert_pause

    rng = np.random.default_rng(3)
    x = _tone(1.0)
    labels = np.full((30, 52), 0.5, np.float32)
    rest = np.zeros(52, np.float32)
    rest[JAW] = 0.03
    y, lab = insert_pause(x, labels, rest, rng, 0.4, where)
    assert len(y) == len(x) + int(0.4 * SR) and lab.shape == (num_frames_for(len(y)), 52)
    quiet = np.abs(y) < 0.01
    start = {"start": 0, "end": SR}.get(where)
    if start is None:  # a 0.1 s boundary inside the clip
        runs = np.convolve(quiet, np.ones(200), "valid") == 200  # 200 quiet samples in a row: not a zero crossing
        start = int(np.flatnonzero(runs)[0])
    assert quiet[start:start + int(0.4 * SR)].all()
    f0 = start * 30 // SR
    middle = lab[f0 + 3:f0 + 9]
    assert np.allclose(middle[:, JAW], 0.03)  # the jaw rests in the pause...
    brow = ARKIT_BLENDSHAPE_NAMES.index("browInnerUp")
    assert np.allclose(middle[:, brow], 0.5)  # ...the upper face holds its value
    assert np.allclose(lab[:f0, JAW], 0.5) and (where == "end" or np.allclose(lab[f0 + 12:, JAW], 0.5))


def test_make_real_mix_speed_options_reach_the_augmentation_and_bad_values_are_usage_errors(capsys):
    """--speed-factors / --p-speed of hub_scripts/make_real_mix.py: parsed into the mix's augmentation
    config; malformed or out-of-range factors are argparse errors (exit 2) that name the option."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_real_mix", Path(__file__).parents[1] / "hub_scripts" / "make_real_mix.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    parser = script.build_parser()
    args = parser.parse_args(["--grid-dataset", "g", "-o", "o", "--speed-factors", "0.95,1.2,1.4", "--p-speed", "0.7"])
    assert args.speed_factors == (0.95, 1.2, 1.4) and args.p_speed == 0.7
    assert parser.parse_args(["--grid-dataset", "g", "-o", "o"]).speed_factors is None  # AugmentConfig's default
    for bad in ("fast", "1.2,", "3.0", "0.1,1.1"):
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(["--grid-dataset", "g", "-o", "o", "--speed-factors", bad])
        assert stop.value.code == 2 and "--speed-factors" in capsys.readouterr().err
