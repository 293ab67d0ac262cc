"""EmoStyle-Synth: eSpeak binding, generator, and the known structure of what it writes.

A small dataset (3 speakers × 3 sentences × 8 emotions = 72 clips, a few seconds to make) is
generated once per session and streamed back with ``datasets.load_dataset(folder, streaming=True)``,
the way a Hub repo would be read.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from pestalk_hf.data.espeak import VoiceSettings, synthesize
from pestalk_hf.data.schema import ARKIT_BLENDSHAPE_NAMES, EMOTIONS, num_frames_for
from pestalk_hf.data.synth import (
    ACCENTS,
    BASE_SENTENCES,
    SynthConfig,
    generate,
    loudness_envelope,
    make_plan,
    phone_visemes,
)

SMALL = SynthConfig(num_speakers=3, num_sentences=3, seed=0)
SPLITS = {"train", "validation", "test", "test_speakers"}
# Style channels no viseme, gaze or blink touches: their time-mean is the style target × mean g(t).
CHECK_CHANNELS = [ARKIT_BLENDSHAPE_NAMES.index(c) for c in (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "eyeSquintLeft",
    "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft",
    "noseSneerRight", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthShrugUpper")]
JAW, CLOSE = ARKIT_BLENDSHAPE_NAMES.index("jawOpen"), ARKIT_BLENDSHAPE_NAMES.index("mouthClose")


@functools.lru_cache(maxsize=None)
def _generate_small(base: str) -> Path:
    out = Path(base) / "emostyle-synth-small"
    generate(SMALL, out)
    return out


@pytest.fixture(scope="session")
def small_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated EmoStyle-Synth folder (shared with test_loading through the lru_cache)."""
    return _generate_small(str(tmp_path_factory.getbasetemp()))


def _stream(folder: Path, split: str) -> list[dict]:
    from pestalk_hf.data.loading import load_clips

    return list(load_clips(folder, split, streaming=True))


@pytest.fixture(scope="module")
def all_clips(small_synth: Path) -> list[dict]:
    return [dict(ex, split=split) for split in sorted(SPLITS) for ex in _stream(small_synth, split)]


# ---------------------------------------------------------------------------------------------- eSpeak
def test_espeak_gives_waveform_and_phone_timing():
    utt = synthesize("Bob made a happy puppy.", VoiceSettings(voice="en-us+m3"), seed=3)
    assert utt.sampling_rate == 16000 and utt.waveform.dtype == np.float32
    duration = len(utt.waveform) / 16000
    assert 0.8 < duration < 4.0 and np.abs(utt.waveform).max() > 0.05
    starts = [p.start for p in utt.phones]
    assert starts == sorted(starts) and utt.phones[-1].end <= duration + 1e-3
    names = [p.name.strip("ˈˌ") for p in utt.phones]
    assert names[0] == "b" and names.count("p") == 3  # "Bob ... happy puppy"
    # the audio is quiet in the closure of the first /p/ of "puppy" and loud in the vowel after it
    p = [ph for ph in utt.phones if ph.name == "p"][1]
    vowel = utt.phones[utt.phones.index(p) + 1]
    rms = lambda a, b: np.sqrt(np.mean(utt.waveform[int(a * 16000):int(b * 16000)] ** 2))  # noqa: E731
    assert rms(p.start, p.end) < 0.5 * rms(vowel.start, vowel.end)


def test_espeak_is_reproducible_and_validates_settings():
    s = VoiceSettings(voice="en-us+m3", rate=160, pitch=40)
    first = synthesize("Maybe we should move the boxes.", s, seed=1).waveform
    synthesize("Something else in between.", VoiceSettings(voice="en+f2"), seed=9)
    again = synthesize("Maybe we should move the boxes.", s, seed=1).waveform
    assert np.array_equal(first, again)
    faster = synthesize("Maybe we should move the boxes.", VoiceSettings(voice="en-us+m3", rate=260), seed=1)
    assert len(faster.waveform) < 0.8 * len(first)
    with pytest.raises(ValueError, match="no voice"):
        synthesize("hello", VoiceSettings(voice="xx-nope+zz"))
    with pytest.raises(ValueError, match="rate"):
        synthesize("hello", VoiceSettings(rate=20))
    with pytest.raises(ValueError, match="empty"):
        synthesize("  ")


def test_every_phone_espeak_emits_has_a_viseme():
    for accent in ACCENTS:
        for sentence in BASE_SENTENCES[:6]:
            for phone in synthesize(sentence, VoiceSettings(voice=accent)).phones:
                assert phone_visemes(phone.name)  # KeyError would mean a gap in the table
    assert phone_visemes("") == ("rest",) and phone_visemes("ˈaɪ") == ("AA", "I")
    assert phone_visemes("tʃ") == ("CH",) and phone_visemes("m") == ("PP",)
    with pytest.raises(KeyError):
        phone_visemes("ǂ")


# ---------------------------------------------------------------------------------------------- layout
def test_layout_streams_with_the_shared_schema(small_synth: Path, all_clips: list[dict]):
    import datasets

    assert {p.name for p in (small_synth / "data").glob("*.parquet")} == {
        f"{s}-00000-of-00001.parquet" for s in SPLITS}
    for name in ("README.md", "style_matrix.json", "pairs.jsonl", "alignments.jsonl"):
        assert (small_synth / name).is_file()
    streamed = datasets.load_dataset(str(small_synth), streaming=True)
    assert set(streamed) == SPLITS
    row = next(iter(streamed["train"]))
    assert set(row) == {"id", "audio", "blendshapes", "fps", "speaker", "emotion", "intensity", "sentence", "source"}
    assert len(all_clips) == 3 * 3 * 8
    for ex in all_clips:
        labels = ex["blendshapes"]
        assert ex["fps"] == 30 and ex["sampling_rate"] == 16000 and ex["source"] == "emostyle-synth"
        assert labels.shape == (num_frames_for(len(ex["waveform"])), 52)
        assert labels.min() >= 0.0 and labels.max() <= 1.0
        assert np.all(labels[:, ARKIT_BLENDSHAPE_NAMES.index("tongueOut")] == 0)
        assert ex["intensity"] == (1 if ex["emotion"] == 0 else 3)


def test_splits_hold_out_sentences_and_speakers(small_synth: Path, all_clips: list[dict]):
    by_split = {s: [ex for ex in all_clips if ex["split"] == s] for s in SPLITS}
    sentences = {s: {ex["sentence"] for ex in v} for s, v in by_split.items()}
    speakers = {s: {ex["speaker"] for ex in v} for s, v in by_split.items()}
    assert not sentences["train"] & sentences["validation"] and not sentences["train"] & sentences["test"]
    assert not sentences["validation"] & sentences["test"]
    assert speakers["train"] == speakers["validation"] == speakers["test"]
    assert not speakers["test_speakers"] & speakers["train"] and len(speakers["test_speakers"]) == 1
    meta = json.loads((small_synth / "style_matrix.json").read_text())
    assert set(meta["test_speakers"]) == speakers["test_speakers"]


def test_every_sentence_in_every_emotion_and_pair_index(small_synth: Path, all_clips: list[dict]):
    from pestalk_hf.data.loading import load_pair_index

    seen = {(ex["speaker"], ex["sentence"], ex["emotion"]) for ex in all_clips}
    assert len(seen) == 3 * 3 * 8  # each speaker says each sentence in each emotion
    by_id = {ex["id"]: ex for ex in all_clips}
    pairs = load_pair_index(small_synth)
    assert len(pairs) == 3 * 3 * 7
    for p in pairs:
        n, e = by_id[p["neutral_id"]], by_id[p["emotional_id"]]
        assert n["emotion"] == 0 and e["emotion"] == EMOTIONS.index(p["emotion"]) != 0
        assert n["speaker"] == e["speaker"] == p["speaker"] and n["sentence"] == e["sentence"] == p["sentence"]
    assert {p["emotional_id"] for p in pairs} == {i for i, ex in by_id.items() if ex["emotion"] != 0}
    assert {p["split"] for p in load_pair_index(small_synth, "test_speakers")} == {"test_speakers"}


# ---------------------------------------------------------------------------------------------- structure
def test_lip_curves_follow_phoneme_timing(small_synth: Path, all_clips: list[dict]):
    """mouthClose peaks in /p b m/ and jawOpen in open vowels, at the eSpeak phone times (lag 0)."""
    phones = {}
    for line in (small_synth / "alignments.jsonl").read_text().splitlines():
        doc = json.loads(line)
        phones[doc["id"]] = doc["phones"]
    lags = []
    for ex in all_clips:
        labels = ex["blendshapes"]
        t = (np.arange(len(labels)) + 0.5) / 30
        bilabial, open_vowel = np.zeros(len(t), bool), np.zeros(len(t), bool)
        for name, start, end in phones[ex["id"]]:
            vis = phone_visemes(name)
            if vis == ("PP",):
                bilabial[np.argmin(np.abs(t - (start + end) / 2))] = True
            elif vis[0] in ("AA", "AE", "AH", "O", "E"):  # vowels with a jaw target >= 0.3
                open_vowel[np.argmin(np.abs(t - (start + end) / 2))] = True
        assert bilabial.any() and open_vowel.any()
        assert labels[bilabial, CLOSE].mean() > labels[open_vowel, CLOSE].mean() + 0.05, ex["id"]
        assert labels[open_vowel, JAW].mean() > labels[bilabial, JAW].mean() + 0.05, ex["id"]
        x = labels[:, CLOSE] - labels[:, CLOSE].mean()
        y = bilabial - bilabial.mean()
        score = [np.dot(np.roll(x, -lag)[6:-6], y[6:-6]) for lag in range(-6, 7)]
        lags.append(int(np.argmax(score)) - 6)
    assert np.mean(np.abs(lags) <= 1) > 0.9, lags


def test_jaw_follows_the_audio_loudness(all_clips: list[dict]):
    """Independent of the alignment file: the jaw opens when the waveform is loud, without delay."""
    corr, lags = [], []
    for ex in all_clips:
        jaw = ex["blendshapes"][:, JAW]
        env = loudness_envelope(ex["waveform"], len(jaw))
        corr.append(np.corrcoef(env, jaw)[0, 1])
        xc = [np.corrcoef(np.roll(env, lag)[6:-6], jaw[6:-6])[0, 1] for lag in range(-6, 7)]
        lags.append(int(np.argmax(xc)) - 6)
    assert np.median(corr) > 0.35 and min(corr) > 0.15
    assert np.median(np.abs(lags)) <= 2


def test_labels_recover_the_saved_style_matrix(small_synth: Path, all_clips: list[dict]):
    from pestalk_hf.data.loading import load_style_matrix

    style, meta = load_style_matrix(small_synth)
    assert style.shape == (3, 8, 52) and style.min() >= 0 and style.max() <= 1
    plan = make_plan(SMALL)
    np.testing.assert_allclose(style, plan.style, atol=1e-6)
    speaker_index = {s: i for i, s in enumerate(meta["speakers"])}
    means = np.stack([ex["blendshapes"][:, CHECK_CHANNELS].mean(0) for ex in all_clips])
    targets = np.stack([style[speaker_index[ex["speaker"]], ex["emotion"], CHECK_CHANNELS] for ex in all_clips])
    assert np.corrcoef(means.ravel(), targets.ravel())[0, 1] > 0.95
    # identify each emotional clip's speaker from its labels alone, given its emotion
    gain = float(np.sum(means * targets) / np.sum(targets * targets))
    hits = []
    for ex, m in zip(all_clips, means):
        if ex["emotion"] != 0:
            dist = [np.abs(m - gain * style[s, ex["emotion"], CHECK_CHANNELS]).sum() for s in range(3)]
            hits.append(int(np.argmin(dist)) == speaker_index[ex["speaker"]])
    assert np.mean(hits) > 0.95


def test_speakers_differ_in_the_upper_face_as_the_style_says(small_synth: Path, all_clips: list[dict]):
    from pestalk_hf.data.loading import load_style_matrix

    style, meta = load_style_matrix(small_synth)
    idx = {s: i for i, s in enumerate(meta["speakers"])}
    clip = {(ex["speaker"], ex["emotion"], ex["sentence"]): ex["blendshapes"][:, CHECK_CHANNELS].mean(0)
            for ex in all_clips}
    corr, gaps = [], []
    for (a, emo, sent), ma in clip.items():
        for (b, emo2, sent2), mb in clip.items():
            if emo == emo2 and sent == sent2 and a < b and emo != 0:
                expected = style[idx[a], emo, CHECK_CHANNELS] - style[idx[b], emo, CHECK_CHANNELS]
                corr.append(np.corrcoef(ma - mb, expected)[0, 1])
                gaps.append(np.abs(ma - mb).max())
    assert len(corr) == 7 * 3 * 3
    assert np.median(corr) > 0.9 and min(corr) > 0.6
    assert min(gaps) > 0.05  # the same sentence in the same emotion looks different per speaker


def test_emotions_change_the_prosody(all_clips: list[dict]):
    clip = {(ex["speaker"], ex["sentence"], EMOTIONS[ex["emotion"]]): ex["waveform"] for ex in all_clips}
    keys = {(s, k) for s, k, _ in clip}
    rms = lambda w: float(np.sqrt(np.mean(w ** 2)))  # noqa: E731
    assert all(len(clip[(*k, "sad")]) > len(clip[(*k, "angry")]) for k in keys)  # sad speaks slower
    assert all(rms(clip[(*k, "angry")]) > rms(clip[(*k, "sad")]) for k in keys)  # and softer


# ---------------------------------------------------------------------------------------------- generator
def test_generation_is_deterministic_for_a_seed(tmp_path: Path):
    cfg = SynthConfig(num_speakers=2, num_sentences=3, emotions=("neutral", "happy"), seed=5,
                      num_test_speakers=0, rows_per_shard=2)
    a = generate(cfg, tmp_path / "a")
    generate(cfg, tmp_path / "b", num_proc=2)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert a["shards"] == {"train": 2, "validation": 2, "test": 2}  # 2 clips/group → one group per shard
    for rel in files:  # byte-identical shards, alignments, pairs, style matrix and card
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    other = SynthConfig(**{**cfg.__dict__, "seed": 6})
    generate(other, tmp_path / "c")
    assert (tmp_path / "a" / "style_matrix.json").read_text() != (tmp_path / "c" / "style_matrix.json").read_text()
    assert a["seconds_of_audio"] > 0 and a["speed_x_realtime"] > 1.0


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="neutral"):
        make_plan(SynthConfig(emotions=("happy", "sad")))
    with pytest.raises(ValueError, match="unknown emotions"):
        make_plan(SynthConfig(emotions=("neutral", "bored")))
    with pytest.raises(ValueError, match="none of 3 for training"):
        make_plan(SynthConfig(num_sentences=3, num_validation_sentences=2, num_test_sentences=1))
    with pytest.raises(ValueError, match="held-out speakers"):
        make_plan(SynthConfig(num_speakers=2, num_test_speakers=2))
    with pytest.raises(ValueError, match="intensity_levels"):
        make_plan(SynthConfig(intensity_levels=(4,)))


def test_cli_writes_a_dataset(tmp_path: Path):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "hub_scripts" / "make_emostyle_synth.py"
    spec = importlib.util.spec_from_file_location("make_emostyle_synth", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "cli"
    assert cli.main(["--output", str(out), "--num-speakers", "1", "--num-sentences", "3", "--levels", "1,2"]) == 0
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 3 * 7 * 2 and {p["intensity"] for p in pairs} == {1, 2}
    assert cli.main(["--output", str(out), "--num-speakers", "0"]) == 2


# ---------------------------------------------------------------------------------------------- Kokoro speakers
def test_kokoro_speakers_are_planned_without_changing_the_espeak_ones():
    from pestalk_hf.data.synth import SpeakerProfile, kokoro_speed, make_speakers, num_kokoro_speakers

    voices = ["af_heart", "am_michael"]
    plain, mixed = make_speakers(5, 0), make_speakers(5, 0, kokoro_fraction=0.4, kokoro_voices=voices)
    assert num_kokoro_speakers(5, 0.4) == 2 and num_kokoro_speakers(3, 0.5) == 2 and num_kokoro_speakers(4, 0.0) == 0
    kokoro = [s for s in mixed if s.tts == "kokoro"]
    assert len(kokoro) == 2 and make_speakers(5, 0, 0.4, voices) == mixed  # seeded
    for a, b in zip(plain, mixed):
        assert (a.articulation, a.brow_accent, a.blink_rate) == (b.articulation, b.brow_accent, b.blink_rate)
        if b.tts == "espeak":
            assert a == b
    for s in kokoro:
        assert s.voice.startswith("kokoro:") and 0.9 <= s.base_speed <= 1.1
        names = [s.kokoro_voice] if isinstance(s.kokoro_voice, str) else list(s.kokoro_voice)
        assert set(names) <= set(voices) and len(set(names)) == len(names)
        if isinstance(s.kokoro_voice, dict):
            assert sum(s.kokoro_voice.values()) == pytest.approx(1.0) and 0.3 <= min(s.kokoro_voice.values()) <= 0.5
    # one voice only: no mixes; more Kokoro speakers than voices still works
    solo = make_speakers(4, 1, kokoro_fraction=1.0, kokoro_voices=["af_heart"])
    assert {s.kokoro_voice for s in solo} == {"af_heart"}
    with pytest.raises(ValueError, match="voice pack"):
        make_speakers(3, 0, kokoro_fraction=0.5)
    with pytest.raises(ValueError, match="kokoro_fraction"):
        make_plan(SynthConfig(kokoro_fraction=1.5))
    fast = SpeakerProfile("x", "kokoro:af_heart", 0, 0, 0, 1.0, 0.1, 10.0, tts="kokoro", kokoro_voice="af_heart",
                          base_speed=1.1)
    assert kokoro_speed(fast, "neutral", 3) == pytest.approx(1.1)
    assert kokoro_speed(fast, "sad", 3) == pytest.approx(1.1 * 0.78) and kokoro_speed(fast, "sad", 1) == pytest.approx(1.1 * 0.89)


def test_aligned_phones_get_espeak_stress():
    from pestalk_hf.data.aligner import AlignedPhone
    from pestalk_hf.data.synth import stressed_ipa_phones

    # CMUdict phones of "Bob made a happy puppy from the window." as the aligner gives them (eSpeak
    # joins "from the" into one word, which the sequence matching must survive)
    arpa = "SIL B AA B M EY D AH HH AE P IY P AH P IY F R AH M DH AH W IH N D OW SIL".split()
    aligned = [AlignedPhone(n, 0.1 * i, 0.1 * (i + 1)) for i, n in enumerate(arpa)]
    phones = stressed_ipa_phones(aligned, "Bob made a happy puppy from the window.")
    assert [p.name for p in phones if p.name.startswith("ˈ")] == ["ˈɑ", "ˈæ", "ˈʌ", "ˈɪ"]
    assert phones[0].name == "" and [p.start for p in phones] == [p.start for p in aligned]
    assert all(phone_visemes(p.name) for p in phones)  # every name drives the viseme model


def test_unalignable_kokoro_clip_is_retried_at_speed_1_then_skipped(monkeypatch: pytest.MonkeyPatch):
    import dataclasses

    from pestalk_hf.data import synth as S
    from pestalk_hf.data.aligner import AlignedPhone, Alignment, AlignmentError

    calls: list[float] = []

    class FakeTTS:
        def synthesize(self, text, voice, speed, align=True):
            calls.append(speed)
            return np.full(16000, 0.1 if speed == 1.0 else 0.2, np.float32), []

    class FakeAligner:
        def __init__(self, fail_at):
            self.fail_at = fail_at

        def align(self, wav, sr, text):
            if float(wav[0]) in self.fail_at:
                raise AlignmentError("impossible duration")
            return Alignment([AlignedPhone("SIL", 0.0, 0.3), AlignedPhone("AA", 0.3, 0.8, 0), AlignedPhone("SIL", 0.8, 1.0)], [])

    plan = make_plan(SynthConfig(num_speakers=1, num_sentences=2, emotions=("neutral", "sad"), seed=1))
    plan.speakers = [dataclasses.replace(plan.speakers[0], tts="kokoro", kokoro_voice="af_heart", base_speed=1.0)]
    plan.kokoro_voices_dir = "unused"
    sad = plan.groups[0][1]
    monkeypatch.setattr(S, "_kokoro_engine", lambda d: (FakeTTS(), FakeAligner({np.float32(0.2)})))
    row, phones = S.generate_clip(plan, sad)  # the sad speed fails, speed 1.0 works
    assert calls == [pytest.approx(0.78), 1.0] and phones[1][0].lstrip("ˈ") == "ɑ"
    lead = int(round(phones[0][1] * 16000))  # the aligner's phones are shifted by the lead silence
    assert len(row["blendshapes"]) == num_frames_for(lead + 16000 + 1600) and phones[-1][2] == pytest.approx(phones[0][1] + 1.0)
    monkeypatch.setattr(S, "_kokoro_engine", lambda d: (FakeTTS(), FakeAligner({np.float32(0.1), np.float32(0.2)})))
    result = S._generate_group(0, plan)
    assert [r[0] is None for r in result] == [True, True] and "could not be aligned" in result[1][1][1]
    skipped = {r[1][0] for r in result}
    assert S.pair_records(plan, skipped) == S.pair_records(plan)[1:]  # group 0's pair is left out


KOKORO_SENTENCES = ("Bob made a happy puppy from paper.", "Maybe we should move the boxes before noon.")


def _kokoro_ready() -> None:
    from pestalk_hf.data import kokoro_tts as K

    if not K.is_available():
        pytest.skip("needs the 'synth' extra: pip install -e '.[synth]'")
    folder = K.default_voices_dir()
    if not any((folder / f"{n}.bin").is_file() for n in K.ENGLISH_VOICES):
        pytest.skip(f"no Kokoro voice packs in {folder}: run `python -m pestalk_hf.data.kokoro_tts fetch-voices "
                    f"{folder} --voices af_heart,am_michael` or set PESTALK_KOKORO_VOICES")


def test_kokoro_speaker_generation(tmp_path: Path):
    _kokoro_ready()
    cfg = SynthConfig(num_speakers=2, sentences=KOKORO_SENTENCES, emotions=("neutral", "sad"), seed=3,
                      num_test_speakers=0, kokoro_fraction=0.5, rows_per_shard=4)
    a = generate(cfg, tmp_path / "a")
    b = generate(cfg, tmp_path / "b", num_proc=2)  # engines made lazily in the forked workers
    assert a["skipped"] == {} == b["skipped"] and a["splits"]["train"]["clips"] == 8
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    for rel in files:  # deterministic for the seed, whatever num_proc is
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel

    style = json.loads((tmp_path / "a" / "style_matrix.json").read_text())
    tts = {p["name"]: p for p in style["speaker_profiles"]}
    kokoro = [n for n, p in tts.items() if p["tts"] == "kokoro"]
    assert len(kokoro) == 1 and style["config"]["kokoro_fraction"] == 0.5 and "kokoro_voices_dir" not in style["config"]
    card = (tmp_path / "a" / "README.md").read_text()
    assert f"{kokoro[0]}: {tts[kokoro[0]]['voice'].removeprefix('kokoro:')}" in card and "Kokoro-82M" in card

    align = {json.loads(x)["id"]: json.loads(x)["phones"] for x in (tmp_path / "a" / "alignments.jsonl").read_text().splitlines()}
    clips = _stream(tmp_path / "a", "train")
    assert {c["speaker"] for c in clips} == set(tts) and len(clips) == 8
    seen = 0
    for c in clips:
        wav, bs = c["waveform"], np.asarray(c["blendshapes"])
        assert bs.shape == (num_frames_for(len(wav)), 52) and bs.min() >= 0 and bs.max() <= 1 and c["fps"] == 30
        if tts[c["speaker"]]["tts"] != "kokoro":
            continue
        seen += 1
        phones = align[c["id"]]
        speech = [p for p in phones if p[0]]
        assert phones[-1][2] == pytest.approx(len(wav) / 16000 - 0.1, abs=0.002)  # tiles the speech + 0.1 s tail
        assert [p[0].lstrip("ˈ") for p in speech[:3]] in (["b", "ɑ", "b"], ["m", "eɪ", "b"])
        assert any(p[0].startswith("ˈ") for p in speech)  # stress for the brow accents
        start, end = int(speech[0][1] * 30), int(speech[-1][2] * 30)
        lead = int(phones[0][1] * 30)  # the lead silence added before Kokoro's own
        jaw = bs[:, JAW]
        assert jaw[:lead].max() < 0.05 and jaw[start:end].max() > 0.25 and jaw[start:end].std() > 0.04
        rms_db = 20 * np.log10(np.sqrt(np.mean(wav[int(speech[0][1] * 16000):int(speech[-1][2] * 16000)] ** 2)))
        assert -35 < rms_db < -10 and np.mean(np.abs(wav) >= 0.999) < 1e-3
    assert seen == 4
