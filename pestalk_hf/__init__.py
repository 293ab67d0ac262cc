"""PESTalk-HF: speech → 52 ARKit blendshapes with personalised emotional styles."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, AutoModel

from .modeling.configuration_pestalk import (
    ARKIT_BLENDSHAPE_NAMES,
    MEAD_EMOTIONS,
    PESTalkConfig,
)
from .modeling.modeling_pestalk import PESTalkModel, PESTalkOutput

__version__ = "0.1.0"

#: The embedded default model (trained by hub_scripts/train.py on EmoStyle-Synth; see MODEL_CARD.md).
DEFAULT_MODEL = str(Path(__file__).resolve().parent / "default_model")
#: The embedded default of ``pestalk live --streaming-mode lookahead``: DEFAULT_MODEL fine-tuned in the
#: streaming mode (2 frames of look-ahead, 30 frames of left context; configs/default_stream.yaml, MODEL_CARD.md).
DEFAULT_STREAM_MODEL = str(Path(__file__).resolve().parent / "default_stream_model")

# In-process Auto* registration (parler-tts pattern) ...
AutoConfig.register(PESTalkConfig.model_type, PESTalkConfig, exist_ok=True)
AutoModel.register(PESTalkConfig, PESTalkModel, exist_ok=True)
# ... and auto_map + copied modeling files in save_pretrained, for trust_remote_code loading.
PESTalkConfig.register_for_auto_class()
PESTalkModel.register_for_auto_class("AutoModel")

from .pipeline import AudioToBlendshapePipeline, register_pipeline  # noqa: E402  (needs the registration above)

register_pipeline()

__all__ = [
    "ARKIT_BLENDSHAPE_NAMES",
    "AudioToBlendshapePipeline",
    "DEFAULT_MODEL",
    "MEAD_EMOTIONS",
    "PESTalkConfig",
    "PESTalkModel",
    "PESTalkOutput",
]
