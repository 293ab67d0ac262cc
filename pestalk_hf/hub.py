"""Preparing and pushing a model folder for the Hub.

``save_for_hub`` writes what ``save_pretrained`` writes (config with ``auto_map``, safetensors weights,
the modeling files for ``trust_remote_code``) plus the pipeline entry: a ``custom_pipelines`` block in
``config.json`` and a small ``pipeline_pestalk.py``, so that

    pipeline("audio-to-blendshape", model="org/repo", trust_remote_code=True)

works without importing ``pestalk_hf`` first. The pipeline's audio decoding, voiceprints and exporters
live in the ``pestalk-hf`` package (soundfile, PyAV, soxr, Resemblyzer …), so the remote pipeline file
imports them from there; transformers tells a user without the package to ``pip install pestalk_hf``.
"""

from __future__ import annotations

import json
from pathlib import Path

from .pipeline import TASK

PIPELINE_FILE = "pipeline_pestalk.py"
PIPELINE_SOURCE = '''"""Remote-code entry point of the audio-to-blendshape pipeline (needs `pip install pestalk-hf`)."""

from pestalk_hf.pipeline import AudioToBlendshapePipeline

__all__ = ["AudioToBlendshapePipeline"]
'''


def save_for_hub(model, save_directory: str | Path) -> Path:
    """``model.save_pretrained`` + the remote-code pipeline entry. Returns the folder."""
    save_directory = Path(save_directory)
    model.save_pretrained(save_directory)
    (save_directory / PIPELINE_FILE).write_text(PIPELINE_SOURCE)
    config_path = save_directory / "config.json"
    config = json.loads(config_path.read_text())
    config["custom_pipelines"] = {
        TASK: {"impl": f"{Path(PIPELINE_FILE).stem}.AudioToBlendshapePipeline", "pt": ["AutoModel"], "tf": [], "type": "audio"}
    }
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return save_directory


def push_model(folder: str | Path, repo_id: str, private: bool = False, commit_message: str = "Upload PESTalk") -> str:
    """Upload a folder written by :func:`save_for_hub` (plus MODEL_CARD.md as README.md if present)."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message)
    return str(info)
