"""Shared test fixtures: tiny configs (random weights stand in for pretrained ones) and asset paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"


@pytest.fixture
def assets() -> Path:
    """``../shared/assets`` (real speech, heads, video, MediaPipe model); skip when absent."""
    if not ASSETS.is_dir():
        pytest.skip("needs ../shared/assets (real test material, present in CI, absent in a user's clone)")
    return ASSETS


def tiny_config_kwargs(**overrides) -> dict:
    """Keyword arguments of a tiny PESTalkConfig: builds in ms, runs on CPU in ms."""
    kwargs = dict(
        freq_hidden_size=16, freq_num_blocks=1, freq_num_heads=2, num_mel_bins=16,
        kan_grid_size=3, kan_ffn_expansion=1, feature_size=16, voiceprint_dim=8, style_dim=8,
        decoder_hidden_size=16, decoder_num_heads=2, decoder_num_layers=1, decoder_ffn_dim=32, dropout=0.0,
    )
    kwargs.update(overrides)
    return kwargs


@pytest.fixture
def tiny_config():
    from pestalk_hf import PESTalkConfig

    return PESTalkConfig(**tiny_config_kwargs())
