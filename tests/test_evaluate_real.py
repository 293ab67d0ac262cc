"""Real-speech evaluation (`pestalk_hf.evaluation_real`, `hub_scripts/evaluate_real.py`): metrics on
hand-built tracks with known answers, the label parsers on inline text, and one end-to-end run of the
script with a tiny random model over a few real clips."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from pestalk_hf import evaluation_real as er
from pestalk_hf.modeling.configuration_pestalk import ARKIT_BLENDSHAPE_NAMES

IDX = {n: i for i, n in enumerate(ARKIT_BLENDSHAPE_NAMES)}
ROOT = Path(__file__).resolve().parents[1]


def track(jaw, close=None) -> np.ndarray:
    jaw = np.asarray(jaw, dtype=np.float64)
    w = np.zeros((len(jaw), 52))
    w[:, IDX["jawOpen"]] = jaw
    if close is not None:
        w[:, IDX["mouthClose"]] = close
    return w


# ------------------------------------------------------------------------------------ talking faces
def test_a_track_lagging_by_two_frames_has_r_one_at_lag_two():
    rng = np.random.default_rng(0)
    ref = np.convolve(rng.random(200), np.ones(5) / 5, mode="same")
    pred = np.concatenate([[ref[0], ref[0]], ref[:-2]])  # pred[t] = ref[t - 2]
    r = er.lagged_correlations(pred, ref)
    assert r[2] == pytest.approx(1.0) and r[0] < 0.99 and r[-2] < r[2]
    res = er.best_lag_correlation([track(pred)], [track(ref)])
    assert res["lag"] == 2 and res["r"] == pytest.approx(1.0)
    # the other direction, and a constant track (no r)
    assert er.best_lag_correlation([track(ref[2:])], [track(ref[:-2])])["lag"] == -2
    const = er.best_lag_correlation([np.zeros((200, 52))], [track(ref)])
    assert const["r"] is None and const["lag"] is None


def test_std_ratio_lbe_mbe_and_loudness_fit():
    rng = np.random.default_rng(1)
    ref = track(0.2 + 0.1 * rng.standard_normal(90).clip(-2, 2))
    half = ref.copy()
    half[:, IDX["jawOpen"]] = 0.2 + 0.5 * (ref[:, IDX["jawOpen"]] - 0.2)
    assert er.jaw_std_ratio([half], [ref]) == pytest.approx(0.5)
    m = er.talking_face_metrics([ref], [ref])
    assert m["LBE"] == 0 and m["MBE"] == 0 and m["r_jawOpen"] == pytest.approx(1.0) and m["best_lag"] == 0
    mouth = ref.copy()
    mouth[:, IDX["mouthSmileLeft"]] += 0.3  # LBE counts mouth*, not the jaw
    assert er.talking_face_metrics([mouth], [ref])["LBE"] == pytest.approx(0.3)
    # loudness → jawOpen: a clip whose jaw follows its loudness exactly is fitted exactly
    sr, T = 16000, 60
    t = np.arange(T * sr // 30) / sr
    wav = (np.sin(2 * np.pi * 150 * t) * (0.05 + 0.5 * (np.sin(2 * np.pi * 2 * t) > 0))).astype(np.float32)
    loud = er.loudness_db(wav, T)
    assert loud.max() <= 1e-9 and loud.min() >= er.LOUDNESS_FLOOR_DB and loud.min() < -15
    ref = track(0.5 + 0.01 * loud)
    a, b = er.fit_loudness_jaw([wav], [ref])
    assert a == pytest.approx(0.5, abs=1e-6) and b == pytest.approx(0.01, abs=1e-6)
    floor = er.loudness_floor(wav, T, np.full(52, 0.1), (a, b))
    assert np.allclose(floor[:, IDX["jawOpen"]], ref[:, IDX["jawOpen"]]) and np.allclose(floor[:, 0], 0.1)


# ------------------------------------------------------------------------------------ phones
PHONES = [er.Phone("sil", 0.0, 0.5), er.Phone("b", 0.5, 0.6), er.Phone("aa", 0.6, 0.8), er.Phone("m", 0.8, 0.9),
          er.Phone("iy", 0.9, 1.1), er.Phone("pau", 1.1, 1.25), er.Phone("t", 1.25, 1.35), er.Phone("sil", 1.35, 1.5),
          er.Phone("sil", 1.5, 2.0)]


def test_a_track_closed_at_bilabials_scores_100_percent():
    T = 60
    jaw = np.full(T, 0.3)
    for ph in PHONES:
        if ph.label in ("b", "m"):
            jaw[er.phone_frames(ph, T)] = 0.0
    assert er.bilabial_closure(track(jaw), PHONES) == (2, 2)
    assert er.bilabial_closure(track(np.full(T, 0.3)), PHONES) == (0, 2)
    # jaw open but mouthClose compensating = lips closed (ARKit's mouthClose)
    assert er.bilabial_closure(track(np.full(T, 0.3), close=np.full(T, 0.3)), PHONES) == (2, 2)
    # a closure one frame after the phone still counts (±1 frame), three frames after does not
    late = np.full(T, 0.3)
    late[er.phone_frames(PHONES[1], T).max() + 1] = 0.0
    assert er.bilabial_closure(track(late), PHONES[:3]) == (1, 1)
    late = np.full(T, 0.3)
    late[er.phone_frames(PHONES[1], T).max() + 3] = 0.0
    assert er.bilabial_closure(track(late), PHONES[:3]) == (0, 1)
    # open vowels vs consonants, false closures on open vowels
    by = er.jaw_by_phone_class(track(jaw), PHONES)
    assert np.mean(by["open_vowel"]) == pytest.approx(0.3) and set(by) == {"open_vowel", "consonant"}
    assert er.open_vowels_closed(track(jaw), PHONES) == (0, 6)
    assert er.open_vowels_closed(track(np.zeros(T)), PHONES) == (6, 6)


def test_pause_detection_on_synthetic_phone_lists():
    pauses = er.pause_intervals(PHONES)  # 0.15 s pause too short; adjacent sil + sil merged
    assert [(p.start, p.end) for p in pauses] == [(0.0, 0.5), (1.35, 2.0)]
    assert er.pause_intervals(PHONES, min_seconds=0.1)[1] == er.Phone("pau", 1.1, 1.25)
    T = 60
    jaw = np.full(T, 0.3)
    jaw[:15] = 0.02  # first pause at rest; second one open
    assert er.pauses_at_rest(track(jaw), PHONES) == (1, 2)
    assert er.pauses_at_rest(track(np.full(T, 0.3)), PHONES, rest=0.28) == (2, 2)
    # the two frames at each pause edge are not judged (the mouth closes after / opens before speech)
    edge = np.full(T, 0.02)
    edge[13:15] = 0.5
    assert er.pauses_at_rest(track(edge), PHONES[:1]) == (1, 1)


def test_lablaut_parser():
    text = ("signal x\ntype 0\nseparator ;\nnfields 1\n#\n"
            "    0.080000   -1 _t\n    0.120000   -1 !t\t+asp\n    0.150000   -1 a\t\t2\n"
            "    0.300000   -1 \t+hoe\n    0.400000   -1 p\n    0.450000   -1 !p\n    0.500000   -1 tasp+sth\n"
            "    0.600000   -1 m\n    1.000000   -1 .\n")
    ph = er.parse_lablaut(text, end_s=2.0)
    assert [p.label for p in ph] == ["pau", "_t", "!t", "a", "p", "!p", "tasp", "m", "pau"]
    assert ph[3] == er.Phone("a", 0.15, 0.4)  # the +hoe mark does not cut the vowel
    assert ph[-1] == er.Phone("pau", 1.0, 2.0) and ph[0] == er.Phone("pau", 0.0, 0.08)
    merged = er.merge_bilabials(ph, "sampa")
    assert [(m.start, m.end) for m in merged] == [(0.4, 0.5), (0.6, 1.0)]  # p !p = one closure; tasp is not bilabial
    cut = er.parse_lablaut(text, end_s=0.55, cut_s=0.55)
    assert cut[-1] == er.Phone("tasp", 0.5, 0.55) and "m" not in [p.label for p in cut]
    assert er.classify_phone("a", "sampa") == "open_vowel" and er.classify_phone("I", "sampa") == "vowel"
    assert er.classify_phone("!p", "sampa") == "bilabial" and er.classify_phone("S", "sampa") == "consonant"


def test_hts_and_grid_parsers():
    hts = ("0 1300000 x^x-sil+hh=iy@x_x/A:0_0_0\n1300000 2050000 x^sil-hh+iy=t@1_2/A:0\n"
           "2050000 2700000 sil^hh-iy+t=er@2_1/A:0\n2700000 9050000 aa^r-p+l=iy@4_1/A:1\n")
    ph = er.parse_hts_labels(hts)
    assert [p.label for p in ph] == ["sil", "hh", "iy", "p"]
    assert ph[1].start == pytest.approx(0.13) and ph[1].end == pytest.approx(0.205)
    assert [er.classify_phone(p.label) for p in ph] == ["pause", "consonant", "vowel", "bilabial"]
    assert er.classify_phone("AA1") == "open_vowel" and er.classify_phone("SIL") == "pause"
    grid = er.grid_align_to_phones("0 23750 sil\n23750 29500 bin\n29500 34000 blue\n")
    assert [p.label for p in grid] == ["pau", "b", "ih", "n", "b", "l", "uw"]
    assert grid[1].start == pytest.approx(0.95) and grid[3].end == pytest.approx(29500 / 25000)


def test_confusion_matrix_counts():
    emotions = ["neutral", "angry", "contempt", "disgusted", "fear", "happy", "sad", "surprised"]
    truth = ["angry", "angry", "sad", "neutral", "neutral", "neutral"]
    pred = ["angry", "surprised", "sad", "neutral", "sad", "neutral"]
    rep = er.emotion_report(pred, truth, emotions, classes=["angry", "sad", "neutral"])
    assert rep["accuracy"] == pytest.approx(4 / 6) and rep["n"] == 6 and rep["chance"] == pytest.approx(1 / 3)
    assert rep["confusion"]["angry"]["surprised"] == 1 and rep["confusion"]["neutral"]["sad"] == 1
    assert rep["confusion"]["neutral"]["neutral"] == 2 and sum(rep["confusion"]["sad"].values()) == 1
    assert rep["recall"] == {"angry": 0.5, "sad": 1.0, "neutral": pytest.approx(2 / 3)}
    assert rep["balanced_accuracy"] == pytest.approx((0.5 + 1 + 2 / 3) / 3)
    dist = er.prediction_distribution(["sad", "sad", "neutral", "fear"], emotions)
    assert dist["sad"] == 0.5 and dist["angry"] == 0 and sum(dist.values()) == pytest.approx(1)
    assert set(er.EMODB_TO_OURS.values()) <= set(emotions) and "boredom" not in er.EMODB_TO_OURS


def test_ljspeech_rows_keep_the_held_out_chapters_by_default(tmp_path):
    (tmp_path / "metadata.csv").write_text(
        "file,text,normalized_text,seconds,original_sample_rate\n"
        + "".join(f"{c}-0001.flac,Text {c}.,Text {c}.,1.0,22050\n" for c in ("LJ001", "LJ002", "LJ003", "LJ004")))
    for c in ("LJ001", "LJ002", "LJ003"):  # LJ004's audio is missing
        (tmp_path / f"{c}-0001.flac").write_bytes(b"")
    cfg = er.RealEvalConfig(output=str(tmp_path / "out"))
    assert cfg.ljspeech_chapters == ("LJ001", "LJ002")
    assert [r["id"] for r in er.ljspeech_rows(tmp_path, chapters=cfg.ljspeech_chapters)] == ["LJ001-0001", "LJ002-0001"]
    assert [r["id"] for r in er.ljspeech_rows(tmp_path, limit=1, chapters=("LJ003",))] == ["LJ003-0001"]
    assert len(er.ljspeech_rows(tmp_path, chapters=None)) == 3


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="unknown sections"):
        er.RealEvalConfig(output="x", sections=("lips",))


# ------------------------------------------------------------------------------------ end to end
def _tiny_s1_dataset(assets: Path, out: Path) -> None:
    """A 3D-EmoStyle folder with one train and one test GRID s1 clip (real audio, random labels)."""
    from pestalk_hf.data.schema import make_row, num_frames_for, write_parquet_shard
    from pestalk_hf.data.video_io import decode_audio

    rng = np.random.default_rng(0)
    for split, stem in (("train", "bbaf3s"), ("test", "bbaf2n")):
        wav, _ = decode_audio(assets / "video" / "grid_s1" / f"{stem}.mp4")
        labels = rng.random((num_frames_for(len(wav)), 52)).astype(np.float32) * 0.3
        row = make_row(id=stem, waveform=wav, blendshapes=labels, speaker="grid_s1", emotion="neutral", sentence=stem)
        write_parquet_shard([row], out / "data" / f"{split}-00000.parquet")


def test_script_end_to_end_with_a_tiny_model(assets, tmp_path):
    import torch

    from pestalk_hf import PESTalkConfig, PESTalkModel

    from .conftest import tiny_config_kwargs
    from .test_modeling import randomise_outputs

    torch.manual_seed(0)
    model = PESTalkModel(PESTalkConfig(**tiny_config_kwargs(voiceprint_dim=256))).eval()
    randomise_outputs(model)
    model.save_pretrained(tmp_path / "model")
    _tiny_s1_dataset(assets, tmp_path / "s1")
    out = tmp_path / "eval"
    spec = importlib.util.spec_from_file_location("evaluate_real_cli", ROOT / "hub_scripts" / "evaluate_real.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    argv = ["--model", str(tmp_path / "model"), "--assets", str(assets), "--grid-s1-dataset", str(tmp_path / "s1"),
            "--output", str(out), "--max-clips", "2", "--grid-new-speakers", "video/grid/brbk7n.mp4", "--no-progress",
            "--ljspeech", str(tmp_path / "no_ljspeech")]
    assert cli.main(argv) == 0
    assert cli.main(argv[:-2] + ["--sections", "lips"]) == 2  # bad arguments: exit code 2
    result = json.loads((out / "real_eval.json").read_text())
    md = (out / "real_eval.md").read_text()
    groups = result["talking_faces"]["groups"]
    assert set(groups) == {"grid_s1_test", "grid_new_speakers"}
    assert set(groups["grid_s1_test"]["systems"]) == {"model", "zeros", "mean_pose", "loudness_fit", "labels"}
    assert "train" in result["talking_faces"]["mean_pose_source"]
    assert groups["grid_s1_test"]["systems"]["zeros"]["r_jawOpen"] is None
    assert groups["grid_new_speakers"]["n_clips"] == 1 and any((out / "cache").iterdir())
    sets = result["phones"]["sets"]
    assert {"arctic", "emodb", "grid_s1"} <= set(sets) and "labels" in sets["grid_s1"]
    assert sets["arctic"]["model"]["bilabials"] == 2 and "ljspeech" in result["phones"]["skipped"]
    emo = result["emotion"]
    assert emo["emodb"]["n"] == 2 and len(emo["emodb"]["columns"]) == 8
    assert emo["neutral_read_speech"]["arctic"]["n"] == 2 and "ljspeech" not in emo["neutral_read_speech"]
    assert "| group | metric | model | zeros | mean pose | loudness→jaw |" in md
    assert "bilabials closed" in md and "read as neutral" in md
    assert "mouth at rest in silence on" in md and result["config"]["rest_in_silence"] is True
    # the model's own pauses, without the pipeline's gate
    assert cli.main(argv + ["--sections", "phones", "--no-rest-in-silence"]) == 0
    raw = json.loads((out / "real_eval.json").read_text())
    assert raw["config"]["rest_in_silence"] is False and "off" in (out / "real_eval.md").read_text().split("\n")[3]
