"""Training and evaluation of PESTalk with Accelerate (the logic behind ``hub_scripts/train.py``).

Why it is built this way:

* **Streaming, deterministic data.** Clips are streamed with :func:`pestalk_hf.data.loading.load_clips`
  and shuffled with a seeded buffer (``datasets`` re-seeds per epoch), so the batch sequence is a pure
  function of the seed. Every process builds the same sequence and keeps the batches
  ``i % num_processes == process_index`` (no dispatching of Python objects between processes). A
  checkpoint records how many batches were consumed; ``--resume`` rebuilds the sequence and skips them
  (collating the skipped ones too, so the cropping RNG lands in the same state). On CPU a resumed run
  reproduces the uninterrupted one bit for bit (tested in ``tests/test_training.py``).
* **Voiceprints once per clip.** A first pass over the training split computes each clip's voiceprint
  with the configured backend (:class:`~pestalk_hf.data.loading.VoiceprintCache`, saved as
  safetensors in the output folder) and collects the speakers (the ESMM library's first axis) and the
  mean pose (the baseline every evaluation is compared with).
* **ESMM library.** Training uses teacher-forced styles (the model does it in ``train()`` mode from
  ``speaker_ids`` + ``emotion_labels``); the library is filled online with the detached pooled E of
  each batch (gathered over processes) and rebuilt at the end with the final extractor in one pass over
  the training data, so the saved library matches the saved weights. The online entries remember only
  the last ``library_memory`` clips of their cell (an exponential moving average): the extractor keeps
  changing, and with exact means over the whole run the decoder learnt to read styles made of E from
  long-gone weights, so the rebuilt library, though correct, was foreign to it (measured on the first
  default model: teacher-forced L_pos on training clips 0.68 with the online library, 2.04 with the
  rebuilt one; the mean pose scores 0.70).
* **L_dis pairs.** With ``use_pairs`` each clip travels with its neutral partner (same speaker and
  sentence, from ``pairs.jsonl``) found within a bounded look-ahead of the stream. Neutral clips and
  clips whose partner is not found in time are their own partner: their L_dis term is the constant
  ``1 - (1 - 1) = 1`` with zero gradient, so they train the other losses only.
* **Threads.** On a shared CPU, two OpenMP threads that are descheduled in turn make every small op
  wait for a time slice (measured: 20–30 s per step instead of ~1 s with one thread under load), hence
  ``num_threads`` in the config.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from .blendshapes import LIPS_CLOSED_THRESHOLD, lip_aperture
from .data.loading import BlendshapeCollator, VoiceprintCache, load_clips, load_pair_index
from .modeling.configuration_pestalk import PESTalkConfig
from .modeling.modeling_pestalk import PESTalkModel, masked_mean

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE = "trainer_state.json"
DATA_STATS = "data_stats.json"
MIXED_PRECISION = ("no", "bf16", "fp16")


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------
@dataclass
class TrainingConfig:
    """Everything a training run needs; loaded from YAML/JSON by :func:`load_training_config`.

    ``model`` holds :class:`PESTalkConfig` overrides (used when ``base_model`` is None: a fresh model);
    ``base_model`` is a folder or Hub id loaded with ``from_pretrained`` (fine-tuning: ``--set
    base_model=DIR``; ``model`` then overrides fields of its config, such as ``streaming_*``). The ablation switches
    ``use_frequency_stream`` / ``use_style_library`` / ``use_disentanglement`` override the model config
    (``use_disentanglement=False`` sets ``loss_weight_disentanglement=0`` and disables pairs).
    """

    dataset: str
    output_dir: str
    train_split: str = "train"
    base_model: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 8
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    lr_schedule: str = "constant"
    max_steps: int = 1000
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "no"
    seed: int = 0
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    use_pairs: bool = True
    pair_lookahead: int = 256
    voiceprint_backend: str = "resemblyzer"
    max_seconds: float | None = 4.0
    shuffle_buffer: int = 256
    lora: dict[str, Any] | None = None
    use_frequency_stream: bool | None = None
    use_style_library: bool | None = None
    use_disentanglement: bool | None = None
    share_conv_features: bool = True
    rebuild_library: bool = True
    library_memory: int | None = 4
    num_threads: int | None = None
    balance_emotion_classes: bool = False
    eval_splits: list[str] = field(default_factory=list)
    eval_max_clips: int | None = None
    time_budget_minutes: float | None = None
    # Lip-gap loss (trainer-side, on top of the model's Eq. 12): see :func:`lip_aperture_loss`.
    loss_weight_aperture: float = 0.0
    aperture_closed_weight: float = 4.0
    # Encoder-only safetensors (a file or the folder `python -m pestalk_hf.pretrained_encoders fetch` wrote)
    # loaded into a fresh model's Whisper content encoder (`model: {content_encoder_type: whisper}`).
    pretrained_content_encoder: str | None = None
    # Train only the parameters whose names start with one of these prefixes (e.g. ["emotion_extractor.classifier"]
    # to re-fit the emotion head of a base_model on other data); None = all trainable parameters.
    trainable_parameters: list[str] | None = None
    # Leave out training clips whose `source` column is one of these (e.g. ["emostyle_synth"] in a real mix).
    exclude_sources: list[str] = field(default_factory=list)
    # Train on these sources but keep them out of the style library rebuilt at the end, the one inference
    # retrieves from by voiceprint (e.g. ["emostyle_synth"]: a real voice never gets an eSpeak voice's style).
    library_exclude_sources: list[str] = field(default_factory=list)

    def validate(self) -> None:
        """Raise ValueError naming the bad field."""
        for name in ("batch_size", "max_steps", "gradient_accumulation_steps", "checkpoint_every",
                     "log_every", "keep_checkpoints", "pair_lookahead", "shuffle_buffer", "library_memory"):
            value = getattr(self, name)
            optional = name == "library_memory"
            if optional and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                kind = "a positive integer or null" if optional else "a positive integer"
                raise ValueError(f"TrainingConfig.{name} must be {kind}, got {value!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"TrainingConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"TrainingConfig.learning_rate must be positive, got {self.learning_rate}")
        if self.lr_schedule not in ("constant", "linear"):
            raise ValueError(f"TrainingConfig.lr_schedule must be 'constant' or 'linear', got {self.lr_schedule!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"TrainingConfig.mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"TrainingConfig.max_grad_norm must be positive or null, got {self.max_grad_norm}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"TrainingConfig.max_seconds must be positive or null, got {self.max_seconds}")
        if self.time_budget_minutes is not None and self.time_budget_minutes <= 0:
            raise ValueError(f"TrainingConfig.time_budget_minutes must be positive or null, got {self.time_budget_minutes}")
        if self.loss_weight_aperture < 0 or self.aperture_closed_weight < 0:
            raise ValueError("TrainingConfig.loss_weight_aperture and aperture_closed_weight must be >= 0")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"TrainingConfig.num_threads must be >= 1 or null, got {self.num_threads}")
        if self.lora is not None and not isinstance(self.lora, dict):
            raise ValueError("TrainingConfig.lora must be a mapping (r, alpha, dropout, target_modules) or null")
        if not isinstance(self.model, dict):
            raise ValueError("TrainingConfig.model must be a mapping of PESTalkConfig overrides")
        if self.trainable_parameters is not None and (
                not isinstance(self.trainable_parameters, list) or not self.trainable_parameters
                or not all(isinstance(x, str) and x for x in self.trainable_parameters)):
            raise ValueError("TrainingConfig.trainable_parameters must be a non-empty list of parameter-name "
                             f"prefixes or null, got {self.trainable_parameters!r}")
        for name in ("exclude_sources", "library_exclude_sources"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise ValueError(f"TrainingConfig.{name} must be a list of source names, got {value!r}")
        if self.library_exclude_sources and not self.rebuild_library:
            raise ValueError("TrainingConfig.library_exclude_sources applies to the library rebuilt at the end: "
                             "it needs rebuild_library: true")
        if self.pretrained_content_encoder is not None and self.base_model is not None:
            raise ValueError("TrainingConfig.pretrained_content_encoder initialises a fresh model; with base_model "
                             "the encoder weights come from the base model")

    @property
    def pairs_enabled(self) -> bool:
        return self.use_pairs and self.use_disentanglement is not False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_training_config(path: str | Path, **overrides: Any) -> TrainingConfig:
    """Read a YAML (``.yaml``/``.yml``) or JSON training config; ``overrides`` replace fields (None is a
    value too: ``library_memory=None`` means exact means)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a training config must be a mapping, got {type(data).__name__}")
    data.update(overrides)
    known = {f.name for f in dataclasses.fields(TrainingConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown training config fields {unknown}; known: {sorted(known)}")
    missing = [name for name in ("dataset", "output_dir") if name not in data]
    if missing:
        raise ValueError(f"{path}: missing required fields {missing}")
    if "adam_betas" in data:
        data["adam_betas"] = tuple(data["adam_betas"])
    cfg = TrainingConfig(**data)
    cfg.validate()
    return cfg


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
def build_model(cfg: TrainingConfig) -> PESTalkModel:
    """Fresh model from ``cfg.model`` overrides, or ``cfg.base_model``; ablation switches applied.

    With ``share_conv_features`` a fresh model copies the content encoder's (frozen) conv feature
    encoder into the emotion stream when both have the same shape: the model then computes the conv
    features once (``_feature_encoders_identical``), which nearly halves the cost of the frozen part.
    """
    switches: dict[str, Any] = {}
    if cfg.use_frequency_stream is not None:
        switches["use_frequency_stream"] = cfg.use_frequency_stream
    if cfg.use_style_library is not None:
        switches["use_style_library"] = cfg.use_style_library
    if cfg.use_disentanglement is False:
        switches["loss_weight_disentanglement"] = 0.0
    if cfg.base_model is not None:
        # fine-tuning: `model` overrides fields of the loaded config (e.g. streaming_* to fine-tune with the
        # bounded-look-ahead masks on, configs/default_stream.yaml); shapes must stay those of the weights
        model = PESTalkModel.from_pretrained(cfg.base_model, **{**cfg.model, **switches})
        model.config.validate()
    else:
        model = PESTalkModel(PESTalkConfig(**{**cfg.model, **switches}))
        if cfg.share_conv_features and _wav2vec2_streams(model) and len(_wav2vec2_streams(model)) == 2:
            content = model.content_encoder.stream.wav2vec2.feature_extractor
            emotion = model.emotion_extractor.temporal.wav2vec2.feature_extractor
            if [p.shape for p in content.parameters()] == [p.shape for p in emotion.parameters()]:
                emotion.load_state_dict(content.state_dict())
        if cfg.pretrained_content_encoder is not None:
            load_pretrained_content_encoder(model, cfg.pretrained_content_encoder)
    return model


def load_pretrained_content_encoder(model: PESTalkModel, path: str | Path) -> list[str]:
    """Load an encoder-only safetensors into the model's Whisper content encoder (strict names and shapes,
    see ``WhisperContentEncoder.load_pretrained_encoder``); returns the names left unused (deeper layers)."""
    from .pretrained_encoders import load_encoder_state

    if model.config.content_encoder_type != "whisper":
        raise ValueError("pretrained_content_encoder needs model.content_encoder_type='whisper', got "
                         f"{model.config.content_encoder_type!r}")
    ignored = model.content_encoder.load_pretrained_encoder(load_encoder_state(path), source=str(path))
    if ignored:
        logger.info("pretrained_content_encoder: %d source tensors unused (%s …)", len(ignored), ignored[0])
    return ignored


def lip_aperture_loss(pred: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                      closed_weight: float = 4.0) -> torch.Tensor:
    """Squared error of the lip gap (:func:`pestalk_hf.blendshapes.lip_aperture`), ``(B, T, 52)`` ×2,
    mask ``(B, T)`` → scalar; frames whose label has the lips closed weigh ``1 + closed_weight``.

    Why: a closure of /p b m/ lasts 2–4 frames and is a *difference* of channels (jawOpen ≈ mouthClose);
    the per-channel L2 of Eq. 8 lets each channel drift a little towards its neighbours' mean, and the
    sum of small drifts opens the lips (measured on the first real-speech default: 57–71 % of bilabials
    closed against 93 % in the MediaPipe labels). Penalising the gap itself, most on closed frames,
    targets exactly that.
    """
    gap_pred, gap_true = lip_aperture(pred.float()), lip_aperture(labels.float())
    weight = mask.float() * (1.0 + closed_weight * (gap_true <= LIPS_CLOSED_THRESHOLD).float())
    return ((gap_pred - gap_true).pow(2) * weight).sum() / mask.float().sum().clamp_min(1.0)


def _wav2vec2_streams(model: PESTalkModel) -> list[Any]:
    """The model's wav2vec2 streams (content first): none for an all-mel model."""
    streams = [model.content_encoder.stream] if model.config.content_encoder_type == "wav2vec2" else []
    if model.emotion_extractor.temporal is not None:
        streams.append(model.emotion_extractor.temporal)
    return streams


def apply_lora(model: PESTalkModel, lora: dict[str, Any]) -> None:
    """Wrap both wav2vec2 encoders with PEFT LoRA (default ``q_proj``/``v_proj``): only the adapters of
    the encoders train; PESTalk's own layers stay fully trainable. Undo with :func:`merge_lora`."""
    from peft import LoraConfig, get_peft_model

    opts = dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    opts.update({("lora_alpha" if k == "alpha" else "lora_dropout" if k == "dropout" else k): v for k, v in lora.items()})
    streams = _wav2vec2_streams(model)
    if not streams:
        raise ValueError("lora: this model has no wav2vec2 encoder to adapt (content_encoder_type is not 'wav2vec2' "
                         "and use_temporal_stream=false)")
    for stream in streams:
        stream.wav2vec2 = get_peft_model(stream.wav2vec2, LoraConfig(**opts))


def merge_lora(model: PESTalkModel) -> None:
    """Fold LoRA adapters into the wav2vec2 weights so the saved model is a plain PESTalkModel."""
    for stream in _wav2vec2_streams(model):
        if hasattr(stream.wav2vec2, "merge_and_unload"):
            stream.wav2vec2 = stream.wav2vec2.merge_and_unload()


def _lr_factor(warmup_steps: int, max_steps: int, schedule: str):
    """Linear warm-up to the base learning rate, then constant (the paper gives no decay) or a linear
    decay to 0 at ``max_steps`` (recomputed on resume, so raising ``max_steps`` extends the decay)."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "linear":
            return max(0.0, (max_steps - step) / max(1, max_steps - warmup_steps))
        return 1.0

    return factor


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
def voiceprint_embed_fn(backend: Any):
    """``(waveform, sampling_rate) -> (D,)`` for :class:`VoiceprintCache` from a backend name or object."""
    from .voiceprint import get_voiceprint_backend

    backend = get_voiceprint_backend(backend) if isinstance(backend, str) else backend
    return backend, (lambda wav, sr: backend.embed(wav))


def training_clips(cfg: TrainingConfig) -> Any:
    """The streamed training split, without the clips of ``cfg.exclude_sources``."""
    clips = load_clips(cfg.dataset, split=cfg.train_split, streaming=True)
    if not cfg.exclude_sources:
        return clips
    excluded = set(cfg.exclude_sources)
    if clips.features is not None and "source" not in clips.features:
        raise ValueError(f"exclude_sources={sorted(excluded)} but {cfg.dataset} has no 'source' column")
    return clips.filter(lambda ex: ex.get("source") not in excluded)


def select_trainable_parameters(model: torch.nn.Module, prefixes: list[str] | None) -> list[str]:
    """Freeze every parameter whose name starts with none of ``prefixes`` (None: leave all as they are).
    Returns the names left trainable; a prefix that matches no trainable parameter is an error (a typo would
    otherwise train nothing, or everything)."""
    if prefixes is None:
        return [n for n, p in model.named_parameters() if p.requires_grad]
    unmatched = [x for x in prefixes if not any(n.startswith(x) for n, p in model.named_parameters() if p.requires_grad)]
    if unmatched:
        raise ValueError(f"trainable_parameters: no trainable parameter starts with {unmatched}")
    kept = []
    for name, param in model.named_parameters():
        if param.requires_grad and not any(name.startswith(x) for x in prefixes):
            param.requires_grad_(False)
        elif param.requires_grad:
            kept.append(name)
    return kept


def prepare_data_stats(cfg: TrainingConfig, cache: VoiceprintCache, path: Path | None,
                       progress: bool = False) -> dict[str, Any]:
    """One pass over the training split: fill the voiceprint cache, list speakers, mean pose, size.

    Returned (and saved to ``path``) so a resumed run does not repeat the pass. ``progress``: a tqdm bar
    (the voiceprint pass takes minutes on thousands of clips).
    """
    if path is not None and path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    from tqdm.auto import tqdm
    speakers: set[str] = set()
    emotion_counts: dict[int, int] = {}
    pose_sum = np.zeros(52, np.float64)
    frames = clips = 0
    seconds = 0.0
    clips_iter = training_clips(cfg)
    for ex in tqdm(clips_iter, desc="voiceprints + data statistics", unit="clip", disable=not progress):
        cache(ex)
        speakers.add(str(ex["speaker"]))
        emotion_counts[int(ex["emotion"])] = emotion_counts.get(int(ex["emotion"]), 0) + 1
        labels = np.asarray(ex["blendshapes"], np.float64)
        pose_sum += labels.sum(0)
        frames += labels.shape[0]
        clips += 1
        seconds += len(ex["waveform"]) / ex["sampling_rate"]
    if clips == 0:
        raise ValueError(f"split {cfg.train_split!r} of {cfg.dataset} has no clips")
    stats = {"speakers": sorted(speakers), "mean_pose": (pose_sum / frames).tolist(), "num_clips": clips,
             "num_frames": frames, "seconds": seconds,
             "emotion_counts": {str(k): v for k, v in sorted(emotion_counts.items())}}
    if path is not None:
        path.write_text(json.dumps(stats, indent=1), encoding="utf-8")
    return stats


def balanced_class_weights(stats: dict[str, Any], num_emotions: int) -> list[float]:
    """L_cls weights ``n / (k · n_c)`` for the k classes present (1 for absent ones): every present class
    then counts as much in the loss however many clips it has (GRID's 1000 neutral clips against
    EmoDB's ~50 per emotion would otherwise teach "always neutral")."""
    counts = stats.get("emotion_counts")
    if not counts:
        raise ValueError("balance_emotion_classes needs emotion counts in the data statistics; delete the run's "
                         f"{DATA_STATS} (written by an older version) and restart")
    present = {int(k): int(v) for k, v in counts.items() if int(v) > 0}
    total = sum(present.values())
    return [total / (len(present) * present[c]) if c in present else 1.0 for c in range(num_emotions)]


def attach_partners(examples: Iterable[dict[str, Any]], partner_of: dict[str, str],
                    lookahead: int) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """``(clip, neutral partner)`` for every clip of a stream, in a deterministic order.

    Recently seen partner clips are kept (at most ``lookahead``); a clip whose partner has not been
    seen waits (at most ``lookahead`` waiting clips, oldest released first). Clips without a listed
    partner, and clips released without one, are their own partner (zero-gradient L_dis term).
    """
    wanted = set(partner_of.values())
    seen: OrderedDict[str, dict[str, Any]] = OrderedDict()
    waiting: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
    num_waiting = 0
    for ex in examples:
        cid = str(ex["id"])
        nid = partner_of.get(cid)
        if nid is None:
            yield ex, ex
        elif nid in seen:
            yield ex, seen[nid]
        else:
            waiting.setdefault(nid, []).append(ex)
            num_waiting += 1
        if cid in wanted:
            seen[cid] = ex
            if len(seen) > lookahead:
                seen.popitem(last=False)
            for emo in waiting.pop(cid, []):
                num_waiting -= 1
                yield emo, ex
        while num_waiting > lookahead:
            _, released = waiting.popitem(last=False)
            num_waiting -= len(released)
            for emo in released:
                yield emo, emo
    for released in waiting.values():
        for emo in released:
            yield emo, emo


class BatchStream:
    """The deterministic, endless sequence of training batches of a run (all epochs).

    ``batches(skip)`` yields ``(global_index, batch)`` starting after ``skip`` consumed batches; a batch is
    the collated clips plus, with pairs, ``pair_input_values``/``pair_attention_mask``, ``speaker_ids``
    and ``voiceprint``.
    """

    def __init__(self, cfg: TrainingConfig, cache: VoiceprintCache, speakers: list[str]) -> None:
        self.cfg, self.cache = cfg, cache
        self.speaker_index = {s: i for i, s in enumerate(speakers)}
        self.partner_of: dict[str, str] = {}
        if cfg.pairs_enabled:
            for p in load_pair_index(cfg.dataset, split=cfg.train_split) or load_pair_index(cfg.dataset):
                self.partner_of[str(p["emotional_id"])] = str(p["neutral_id"])

    def _examples(self, epoch: int) -> Iterator[dict[str, Any]]:
        clips = training_clips(self.cfg)
        if self.cfg.shuffle_buffer > 1:
            clips = clips.shuffle(seed=self.cfg.seed, buffer_size=self.cfg.shuffle_buffer)
            clips.set_epoch(epoch)
        return iter(clips)

    def batches(self, skip: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
        cfg = self.cfg
        collator = BlendshapeCollator(max_seconds=cfg.max_seconds, seed=cfg.seed)
        partner_collator = BlendshapeCollator(max_seconds=cfg.max_seconds)  # crop from the start: same words
        index, epoch = 0, 0
        while True:
            stream = self._examples(epoch)
            items = (attach_partners(stream, self.partner_of, cfg.pair_lookahead) if cfg.pairs_enabled
                     else ((ex, None) for ex in stream))
            buffer: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
            produced = 0
            for item in items:
                buffer.append(item)
                if len(buffer) < cfg.batch_size:
                    continue
                batch = self._collate(buffer, collator, partner_collator)
                buffer, produced = [], produced + 1
                if index >= skip:
                    yield index, batch
                index += 1
            if produced == 0:
                raise ValueError(f"split {cfg.train_split!r} has fewer clips than one batch ({cfg.batch_size})")
            epoch += 1  # the incomplete last batch of an epoch is dropped (fixed batch shape per step)

    def _collate(self, items, collator, partner_collator) -> dict[str, Any]:
        clips = [self.cache(dict(ex)) for ex, _ in items]
        batch = collator(clips)
        batch["speaker_ids"] = torch.tensor([self.speaker_index.get(s, -1) for s in batch["speaker"]])
        if items[0][1] is not None:
            pairs = partner_collator([p for _, p in items])
            batch["pair_input_values"], batch["pair_attention_mask"] = pairs["input_values"], pairs["attention_mask"]
        return batch


MODEL_INPUTS = ("input_values", "attention_mask", "voiceprint", "labels", "labels_mask", "emotion_labels",
                "speaker_ids", "pair_input_values", "pair_attention_mask")


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------
def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints (those whose trainer state was written last), oldest first."""
    root = Path(output_dir) / "checkpoints"
    found = [p for p in root.glob(f"{CHECKPOINT_PREFIX}*") if (p / TRAINER_STATE).exists()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def train(cfg: TrainingConfig, resume: bool | str | Path = False, progress: bool = True) -> Path:
    """Run (or resume) training; returns the folder of the final model (``output_dir/final``).

    ``resume``: True = the latest complete checkpoint in ``output_dir`` (a fresh start if none), or a
    checkpoint folder. Checkpoints every ``checkpoint_every`` optimizer steps, so a crash loses at most
    that many steps.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from tqdm.auto import tqdm

    cfg.validate()
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_with = "tensorboard" if _tensorboard_available() else None
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )
    set_seed(cfg.seed)
    main = accelerator.is_main_process

    backend, embed = voiceprint_embed_fn(cfg.voiceprint_backend)
    cache = VoiceprintCache(embed, out / f"voiceprints-{_safe_name(cfg.voiceprint_backend)}.safetensors")
    stats_path = out / DATA_STATS
    if main:
        stats = prepare_data_stats(cfg, cache, stats_path, progress=progress)
        cache.save()
    accelerator.wait_for_everyone()
    if not main:
        cache = VoiceprintCache(embed, cache.path)
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
    speakers = stats["speakers"]

    model = build_model(cfg)
    if model.config.voiceprint_dim != backend.dim:
        raise ValueError(f"model voiceprint_dim={model.config.voiceprint_dim} but backend "
                         f"{cfg.voiceprint_backend!r} gives {backend.dim}-d voiceprints")
    model.resize_style_library(speakers)
    if cfg.balance_emotion_classes:
        model.config.emotion_class_weights = balanced_class_weights(stats, model.config.num_emotions)
    if model.config.is_streaming and model.config.streaming_mel_prior is None:
        # streaming mode: the running mel normalisation starts from the training data's mean log-mel
        from .streaming import estimate_mel_prior

        model.config.streaming_mel_prior = estimate_mel_prior(model, cfg.dataset, cfg.train_split)
    if cfg.lora:
        apply_lora(model, cfg.lora)
    trainable = select_trainable_parameters(model, cfg.trainable_parameters)
    if main and cfg.trainable_parameters is not None:
        logger.info("training %d parameter tensors (%s)", len(trainable), ", ".join(cfg.trainable_parameters))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, betas=tuple(cfg.adam_betas),
                                  weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(cfg.warmup_steps, cfg.max_steps, cfg.lr_schedule))
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)

    step, consumed = 0, 0
    ckpt = None
    if resume:
        ckpt = latest_checkpoint(out) if resume is True else Path(resume)
    if ckpt is not None:
        accelerator.load_state(str(ckpt), load_kwargs={"weights_only": True})
        state = json.loads((ckpt / TRAINER_STATE).read_text(encoding="utf-8"))
        step, consumed = int(state["step"]), int(state["batches_consumed"])
        if main:
            logger.info("resumed from %s at step %d (%d batches consumed)", ckpt, step, consumed)
    if resume and main:
        # rows logged after the checkpoint we resume from are logged again by this run
        truncate_metrics(out / "metrics.jsonl", step)
    if log_with is not None:
        accelerator.init_trackers("pestalk", config=_flat_for_tracker(cfg.to_dict()))

    raw = accelerator.unwrap_model(model)
    stream = BatchStream(cfg, cache, speakers)
    nproc, rank = accelerator.num_processes, accelerator.process_index
    per_step = cfg.gradient_accumulation_steps * nproc
    metrics_file = out / "metrics.jsonl"
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not (main and progress), desc="train", unit="step")
    model.train()
    running: dict[str, list[float]] = {}
    t_start, audio_seconds, samples = time.perf_counter(), 0.0, 0
    batches = stream.batches(skip=consumed)
    while step < cfg.max_steps:
        for _ in range(per_step):
            index, batch = next(batches)
            consumed = index + 1
            if index % nproc != rank:
                continue
            inputs = {k: v.to(accelerator.device) for k, v in batch.items() if k in MODEL_INPUTS}
            with accelerator.accumulate(model):
                output = model(**inputs)
                loss, aperture = output.loss, None
                if cfg.loss_weight_aperture > 0 and "labels" in inputs:
                    mask = output.frame_mask
                    if inputs.get("labels_mask") is not None:
                        mask = mask & inputs["labels_mask"].bool()
                    aperture = lip_aperture_loss(output.blendshapes, inputs["labels"], mask, cfg.aperture_closed_weight)
                    loss = loss + cfg.loss_weight_aperture * aperture
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            _update_library_online(accelerator, raw, inputs, output, cfg.library_memory)
            terms = {name: getattr(output, name) for name in
                     ("loss", "loss_position", "loss_motion", "loss_classification", "loss_disentanglement")}
            terms.update(loss=loss, loss_aperture=aperture)
            for name, value in terms.items():
                if value is not None:
                    running.setdefault(name, []).append(float(value.detach()))
            audio_seconds += float(inputs["attention_mask"].sum()) / 16000.0
            samples += inputs["input_values"].shape[0]
        step += 1
        scheduler.step()
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            logs = {k: float(np.mean(v)) for k, v in running.items()}
            elapsed = time.perf_counter() - t_start
            logs.update(lr=scheduler.get_last_lr()[0], samples_per_s=samples / elapsed,
                        audio_s_per_s=audio_seconds / elapsed)
            accelerator.log(logs, step=step)
            if main:
                with metrics_file.open("a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": step, **logs}) + "\n")
                bar.set_postfix(loss=f"{logs.get('loss', float('nan')):.4f}")
            running = {}
        out_of_time = _out_of_time(accelerator, cfg, t_start)
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps or out_of_time:
            # the last step is checkpointed too, so a finished run can be extended with --resume
            _save_checkpoint(accelerator, out, step, consumed, cfg.keep_checkpoints)
        if out_of_time:
            logger.warning("time budget of %s min reached at step %d: finishing early", cfg.time_budget_minutes, step)
            break
    bar.close()

    accelerator.wait_for_everyone()
    final = out / "final"
    if main:
        model_final = accelerator.unwrap_model(model)
        merge_lora(model_final)
        if cfg.rebuild_library and model_final.config.use_style_library:
            rebuild_style_library(model_final, cfg, cache, speakers)
        save_final_model(model_final, cfg, stats, final, step)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def _out_of_time(accelerator: Any, cfg: TrainingConfig, t_start: float) -> bool:
    """Wall-clock budget of the training loop (the same decision on every process)."""
    if cfg.time_budget_minutes is None:
        return False
    late = torch.tensor(float(time.perf_counter() - t_start > 60.0 * cfg.time_budget_minutes), device=accelerator.device)
    return bool(accelerator.reduce(late, reduction="max") > 0) if accelerator.num_processes > 1 else bool(late)


def _update_library_online(accelerator: Any, model: PESTalkModel, inputs: dict[str, torch.Tensor], output: Any,
                           memory: int | None) -> None:
    """Fold the batch's detached pooled E into the library (all processes see the same gathered batch);
    ``memory``: clips each entry remembers (None: exact means of everything seen)."""
    if not model.config.use_style_library or model.config.num_style_speakers == 0:
        return
    pooled = masked_mean(output.emotion_features.detach().float(), output.frame_mask)
    speaker_ids, emotions, voiceprints = inputs["speaker_ids"], inputs["emotion_labels"], inputs["voiceprint"]
    if accelerator.num_processes > 1:
        pooled, speaker_ids, emotions, voiceprints = accelerator.gather((pooled, speaker_ids, emotions, voiceprints))
    keep = speaker_ids >= 0
    if bool(keep.any()):
        model.update_style_library(speaker_ids[keep], emotions[keep], pooled[keep], voiceprints[keep].float(), memory)


def truncate_metrics(path: Path, step: int) -> int:
    """Keep only the rows of ``metrics.jsonl`` with ``step <= step`` (and drop unreadable lines, such as
    a line cut short by a kill); rewritten atomically. Returns the number of rows dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            keep = isinstance(row, dict) and int(row["step"]) <= step
        except (ValueError, KeyError, TypeError):
            keep = False
        if keep:
            kept.append(line + "\n")
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        tmp.replace(path)
    return dropped


def _save_checkpoint(accelerator: Any, out: Path, step: int, consumed: int, keep: int) -> None:
    """``accelerator.save_state`` + the trainer state (written last: marks the checkpoint complete)."""
    path = out / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:07d}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        tmp = path / f".{TRAINER_STATE}.tmp"
        tmp.write_text(json.dumps({"step": step, "batches_consumed": consumed}), encoding="utf-8")
        tmp.replace(path / TRAINER_STATE)
        for old in list_checkpoints(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


@torch.no_grad()
def rebuild_style_library(model: PESTalkModel, cfg: TrainingConfig, cache: VoiceprintCache,
                          speakers: list[str]) -> None:
    """Reset the library and refill it with the final extractor over the whole training split
    (eval mode, full clips, no cropping), so the saved library matches the saved weights. Clips of
    ``cfg.library_exclude_sources`` are skipped, and the speakers left without a clip are dropped from the
    library (and ``config.style_speakers``): retrieval never picks them, ``--speaker-style`` does not offer them."""
    was_training = model.training
    model.eval()
    model.resize_style_library([])
    model.resize_style_library(speakers)
    index = {s: i for i, s in enumerate(speakers)}
    collator = BlendshapeCollator()
    device = next(model.parameters()).device
    buffer: list[dict[str, Any]] = []

    def flush() -> None:
        batch = collator(buffer)
        frame_mask_inputs = {k: batch[k].to(device) for k in ("input_values", "attention_mask")}
        out = model(**frame_mask_inputs, voiceprint=batch["voiceprint"].to(device))
        pooled = masked_mean(out.emotion_features.float(), out.frame_mask)
        ids = torch.tensor([index[s] for s in batch["speaker"]], device=device)
        model.update_style_library(ids, batch["emotion_labels"].to(device), pooled, batch["voiceprint"].to(device))
        buffer.clear()

    skipped = set(cfg.library_exclude_sources)
    for ex in training_clips(cfg):
        if ex.get("source") in skipped:
            continue
        buffer.append(cache(ex))
        if len(buffer) == cfg.batch_size:
            flush()
    if buffer:
        flush()
    if skipped:  # drop the speakers left without a clip, so nothing lists a style that does not exist
        counts = model.style_library.speaker_counts.tolist()
        model.resize_style_library([s for s, n in zip(speakers, counts) if n > 0])
    model.train(was_training)


FINAL_TEMP_PREFIX = ".final-partial-"  # ``save_final_model`` builds the folder here, then renames it
FINAL_OLD_PREFIX = ".final-old-"  # the previous final folder, between the two renames


def save_final_model(model: PESTalkModel, cfg: TrainingConfig, stats: dict[str, Any], folder: Path, step: int) -> None:
    """``save_pretrained`` (safetensors + copied modeling files) + training args + a data note.

    All-or-nothing: everything is written into a temporary sibling folder (``.final-partial-*``),
    flushed to disk, and only then renamed to ``folder``; a previous ``folder`` is moved aside first and
    deleted after. A run killed while saving leaves either the old complete folder or none (plus a
    temp folder, removed by the next save), never a ``final/`` with weights but no json files.
    """
    import tempfile

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_final_temps(folder)
    tmp = Path(tempfile.mkdtemp(prefix=FINAL_TEMP_PREFIX, dir=folder.parent))
    try:
        _write_final_files(model, cfg, stats, tmp, step)
        _fsync_tree(tmp)
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=FINAL_OLD_PREFIX, dir=folder.parent))
            os.replace(folder, old / folder.name)
        os.replace(tmp, folder)
        _fsync_dir(folder.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_final_files(model: PESTalkModel, cfg: TrainingConfig, stats: dict[str, Any], folder: Path,
                       step: int) -> None:
    model.config.voiceprint_backend = cfg.voiceprint_backend
    model.save_pretrained(str(folder))
    (folder / "training_args.json").write_text(json.dumps(cfg.to_dict(), indent=1), encoding="utf-8")
    note = {"dataset": cfg.dataset, "split": cfg.train_split, "steps": step,
            **{k: stats[k] for k in ("speakers", "num_clips", "seconds")},
            "mean_pose": stats["mean_pose"]}
    (folder / "training_data.json").write_text(json.dumps(note, indent=1), encoding="utf-8")


def _remove_stale_final_temps(folder: Path) -> None:
    """Temp folders of an earlier ``save_final_model`` that was killed (only our two prefixes)."""
    for prefix in (FINAL_TEMP_PREFIX, FINAL_OLD_PREFIX):
        for stale in folder.parent.glob(f"{prefix}*"):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def _flat_for_tracker(d: dict[str, Any]) -> dict[str, Any]:
    """TensorBoard hparams take scalars/strings only."""
    return {k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v)) for k, v in d.items()}


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# ----------------------------------------------------------------------------------------------
# Prediction and evaluation
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_clips(model: PESTalkModel, dataset_path: str | Path, split: str, backend: Any = "resemblyzer",
                  max_clips: int | None = None) -> Iterator[dict[str, Any]]:
    """Run ``model.animate`` on every clip of a split: yields ``id``, ``blendshapes`` (T, 52),
    ``predicted_emotion``, ``emotion``, ``speaker``, ``style_index``, ``reference`` (T, 52)."""
    if isinstance(backend, str):
        backend, _ = voiceprint_embed_fn(backend)
    model.eval()
    device = next(model.parameters()).device
    for i, ex in enumerate(load_clips(dataset_path, split=split, streaming=True)):
        if max_clips is not None and i >= max_clips:
            return
        wav = torch.from_numpy(np.asarray(ex["waveform"], np.float32)).to(device)
        vp = torch.from_numpy(backend.embed(ex["waveform"])).to(device)
        out = model.animate(wav, vp)
        yield {"id": str(ex["id"]), "blendshapes": out.blendshapes[0].float().cpu().numpy(),
               "predicted_emotion": int(out.emotion_logits.argmax(-1)[0]), "emotion": int(ex["emotion"]),
               "speaker": str(ex["speaker"]), "style_index": int(out.style_indices[0]),
               "reference": np.asarray(ex["blendshapes"], np.float32)}


def predict_dataset(model: PESTalkModel, dataset_path: str | Path, split: str,
                    backend: Any = "resemblyzer") -> dict[str, np.ndarray]:
    """Clip id → predicted (T, 52) blendshapes for one split (what ``hub_scripts/evaluate.py`` reads)."""
    return {r["id"]: r["blendshapes"] for r in predict_clips(model, dataset_path, split, backend)}


def evaluate_model(model: PESTalkModel, dataset_path: str | Path, split: str, backend: Any = "resemblyzer",
                   mean_pose: Any = None, max_clips: int | None = None) -> dict[str, Any]:
    """LBE/PBE/MBE/BA of the model on a split, the same for the constant mean-pose baseline (when
    ``mean_pose`` (52,) is given, e.g. the training data's), emotion accuracy, style recovery (against
    the references and, for EmoStyle-Synth, its known style matrix) and, for library speakers, how often
    retrieval picked the clip's own ⟨speaker, emotion⟩ entry."""
    from .metrics import emotion_accuracy, evaluate_tracks

    records = list(predict_clips(model, dataset_path, split, backend, max_clips))
    if not records:
        raise ValueError(f"split {split!r} of {dataset_path} has no clips")
    preds = [r["blendshapes"] for r in records]
    refs = [r["reference"] for r in records]
    result: dict[str, Any] = {"split": split, "num_clips": len(records), "model": evaluate_tracks(preds, refs)}
    if mean_pose is not None:
        pose = np.asarray(mean_pose, np.float32).reshape(1, -1)
        result["mean_pose_baseline"] = evaluate_tracks([np.repeat(pose, len(r), 0) for r in refs], refs)
    result["emotion"] = emotion_accuracy([r["predicted_emotion"] for r in records], [r["emotion"] for r in records],
                                         num_classes=model.config.num_emotions)
    result.update(_style_recovery(records, dataset_path, model.config.emotions))
    names, c = list(model.config.style_speakers), model.config.num_emotions
    known = [r for r in records if r["speaker"] in names]
    if known and model.config.use_style_library:
        hits_spk = [r["style_index"] >= 0 and r["style_index"] // c == names.index(r["speaker"]) for r in known]
        hits_cell = [h and r["style_index"] % c == r["emotion"] for h, r in zip(hits_spk, known)]
        result["retrieval"] = {"speaker_accuracy": float(np.mean(hits_spk)), "cell_accuracy": float(np.mean(hits_cell)),
                               "num_clips": len(known)}
    return result


def _style_recovery(records: list[dict[str, Any]], dataset_path: str | Path, emotions: list[str]) -> dict[str, Any]:
    """Per-⟨speaker × emotion⟩ style recovery of the predictions against the references' cell means and,
    for EmoStyle-Synth folders, against the known style matrix (:func:`pestalk_hf.metrics.style_recovery_report`)."""
    from .metrics import style_recovery_report

    matrix_path = Path(dataset_path) / "style_matrix.json"
    matrix = json.loads(matrix_path.read_text(encoding="utf-8")) if matrix_path.is_file() else None
    return style_recovery_report([r["blendshapes"] for r in records], [r["reference"] for r in records],
                                 [r["speaker"] for r in records], [emotions[r["emotion"]] for r in records], matrix)


def evaluate_run(cfg: TrainingConfig, splits: list[str] | None = None) -> dict[str, Any] | None:
    """Evaluate ``output_dir/final`` on ``splits`` (default ``cfg.eval_splits``) against the training
    mean pose; writes ``output_dir/eval.json``. Runs on the main process only (returns None elsewhere)."""
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) != 0:
        return None
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    final = Path(cfg.output_dir) / "final"
    model = PESTalkModel.from_pretrained(str(final))
    mean_pose = json.loads((final / "training_data.json").read_text(encoding="utf-8"))["mean_pose"]
    backend, _ = voiceprint_embed_fn(cfg.voiceprint_backend)
    report = {split: evaluate_model(model, cfg.dataset, split, backend, mean_pose, cfg.eval_max_clips)
              for split in (splits or cfg.eval_splits)}
    (Path(cfg.output_dir) / "eval.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report
