"""hub_scripts/ablation_table.py: rows per run and split, the mean-pose row, clear errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("ablation_table", ROOT / "hub_scripts" / "ablation_table.py")
ablation_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablation_table)


def _report(lbe: float, with_library: bool = True) -> dict:
    metrics = {"lbe": lbe, "pbe": lbe + 0.01, "mbe": 2 * lbe, "ba": 0.5}
    split = {"model": metrics, "mean_pose_baseline": {"lbe": 0.9, "pbe": 0.91, "mbe": 1.8, "ba": 0.0},
             "emotion": {"accuracy": 0.75}, "style_recovery_vs_matrix": {"pearson_r_speaker_specific": 0.4}}
    if with_library:
        split["retrieval"] = {"cell_accuracy": 0.5}
    return {"test": split}


def test_table_has_one_row_per_run_and_the_baseline(tmp_path: Path, capsys: pytest.CaptureFixture):
    for name, lbe, lib in (("full", 0.25, True), ("no_esmm", 0.5, False)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval.json").write_text(json.dumps(_report(lbe, lib)))
    assert ablation_table.main([f"full={tmp_path / 'full'}", f"w/o ESMM={tmp_path / 'no_esmm'}", "--splits", "test"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 + 3
    assert lines[2].startswith("| test | full | 0.2500 | 0.2600 | 0.5000 | 0.500 | 0.750 | 0.500 | 0.400 |")
    assert lines[3].startswith("| test | w/o ESMM | 0.5000 |") and "| – | 0.400 |" in lines[3]  # no retrieval
    assert lines[4].startswith("| test | mean pose | 0.9000 | 0.9100 | 1.8000 |")


def test_missing_eval_or_split_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture):
    (tmp_path / "run").mkdir()
    assert ablation_table.main([str(tmp_path / "run")]) == 2
    assert "eval.json not found" in capsys.readouterr().err
    (tmp_path / "run" / "eval.json").write_text(json.dumps(_report(0.3)))
    assert ablation_table.main([str(tmp_path / "run"), "--splits", "test_speakers"]) == 2
    assert "no split 'test_speakers'" in capsys.readouterr().err
