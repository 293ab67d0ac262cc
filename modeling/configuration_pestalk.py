"""PESTalk configuration.

Hub remote code: this file must import only torch/transformers and same-folder modules, because
``save_pretrained`` copies it next to the weights for ``trust_remote_code`` loading.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import PretrainedConfig, Wav2Vec2Config

# The 52 ARKit blendshapes in alphabetical order: the internal order of every tensor in this
# project (EmoTalk and 3D-ETF use the same order).
ARKIT_BLENDSHAPE_NAMES: tuple[str, ...] = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
    "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft",
    "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
    "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft",
    "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper",
    "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight", "tongueOut",
)

# Lower face (speech-driven, high frequency): jaw + mouth + cheekPuff/Squint + noseSneer = 32.
# Everything else (brows, eyes, tongueOut) is the upper face (emotion-driven, low frequency) = 20.
DEFAULT_LOWER_FACE_NAMES: tuple[str, ...] = tuple(
    n for n in ARKIT_BLENDSHAPE_NAMES
    if n.startswith(("jaw", "mouth", "cheek", "noseSneer"))
)

# MEAD's eight emotions, the ClassLabel order of the 3D-EmoStyle dataset.
MEAD_EMOTIONS: tuple[str, ...] = (
    "neutral", "angry", "contempt", "disgusted", "fear", "happy", "sad", "surprised",
)


def tiny_wav2vec2_config(hidden_size: int = 32, num_layers: int = 2, num_heads: int = 2) -> dict[str, Any]:
    """A tiny randomly-initialisable wav2vec2 config (conv strides multiply to 320, like the real one)."""
    return Wav2Vec2Config(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=hidden_size * 2,
        conv_dim=(16, 16, 16, 16, 16, 16, 16),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        layerdrop=0.0,
        mask_time_prob=0.0,
    ).to_dict()


def _normalise_encoder_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """Complete a wav2vec2 sub-config dict with its defaults so that save → load round-trips exactly."""
    full = Wav2Vec2Config(**(config or tiny_wav2vec2_config())).to_dict()
    for key in ("transformers_version", "_name_or_path"):
        full.pop(key, None)
    return full


class PESTalkConfig(PretrainedConfig):
    r"""Configuration of :class:`PESTalkModel`.

    Defaults reproduce the paper where it speaks (feature size 256, voiceprint + emotion style of
    512 + 256, loss weights 1 / 0.5 / 0.1 / 0.01, 32 lower + 20 upper blendshapes) and DESIGN.md §3
    where it is silent. The two wav2vec2 encoders are sub-configs; by default they are tiny so that
    ``PESTalkConfig()`` builds in milliseconds. Use :meth:`PESTalkModel.from_sub_models_pretrained`
    for the paper-size model.

    Args:
        content_encoder_config: wav2vec2 config dict of the content encoder Φ_C.
        emotion_encoder_config: wav2vec2 config dict of the temporal emotion stream Φ_E^t.
        sampling_rate: audio sample rate in Hz (16 kHz).
        fps: animation frame rate (30).
        num_mel_bins / mel_n_fft / mel_win_length / mel_hop_length: log-mel front end of Φ_E^f.
        use_frequency_stream: ablation switch "w/o Φ_E^f".
        freq_hidden_size / freq_num_blocks / freq_num_heads / freq_conv_kernel_size: KAN-Conformer.
        kan_grid_size / kan_spline_order / kan_ffn_expansion: the KAN layers replacing the FFN MLPs.
        feature_size: size of E and C per frame (256 in the paper).
        emotions: class names of the emotion classifier (MEAD's 8).
        voiceprint_dim: voiceprint size (512 pyannote/embedding, 256 Resemblyzer).
        voiceprint_backend: the speaker-embedding backend the library was built with ("resemblyzer",
            "pyannote/embedding" or a checkpoint path); the pipeline uses the same one.
        style_speakers: names of the speakers in the ⟨speaker × emotion⟩ library (its first axis).
        use_style_library: ESMM on; ``False`` is the "w/o ESMM" ablation (one-hot emotion style).
        style_dim: size of the projected style (768 → 128).
        style_retrieval_top_k: 1 = the paper's arg-min; >1 = soft retrieval over the k nearest.
        style_retrieval_temperature: softmax temperature (on cosine similarity) for soft retrieval.
        decoder_hidden_size / decoder_num_heads / decoder_num_layers / decoder_ffn_dim: each decoder.
        period: period (frames) of the periodic positional encoding and the attention bias.
        blendshape_names: output channel names (52 ARKit, alphabetical).
        lower_face_names: the subset decoded by Φ_D^low; the rest go to Φ_D^up.
        loss_weight_*: λ1..λ4 of Eq. 7.
        interpolate_before_transformer: align conv features to the 30 fps grid before the wav2vec2
            transformers (FaceFormer-style; cheaper), else after.
        freeze_feature_encoder: freeze both wav2vec2 conv feature encoders (the paper: they are pretrained);
            set False when training from scratch, where frozen conv features would stay random.
        chunk_seconds / chunk_overlap_seconds: window and overlap for long-audio inference.
        clamp_output: clamp inference outputs into [0, 1].
        content_encoder_type: ``"wav2vec2"`` (the paper: a pretrained speech encoder) or ``"mel"``: a
            log-mel → 1-D conv → KAN-Conformer content stream for models trained from scratch, where a
            wav2vec2 conv front end would start (and, frozen, stay) random on raw waveforms.
            ``"whisper"``: a pretrained Whisper encoder (``whisper_encoder.py``; weights from
            ``pestalk_hf.pretrained_encoders``, loaded by ``TrainingConfig.pretrained_content_encoder``).
        content_hidden_size / content_num_blocks / content_num_heads: size of the ``"mel"`` content stream.
        whisper_d_model / whisper_num_heads / whisper_ffn_dim / whisper_num_mel_bins / whisper_max_positions:
            shape of the Whisper encoder (defaults: Whisper base, 512 / 8 / 2048 / 80 / 1500).
        whisper_num_layers: how many of its first blocks are used (3 of base's 6 by default).
        whisper_freeze: keep the Whisper encoder frozen (its final LayerNorm and the projection train).
        whisper_log_floor: quiet-input guard, the log10-mel floor is ``max(clip max − 8, this)`` (−7: silence
            and hiss read as Whisper's pause level instead of values it never saw); None = Whisper's ``clip max − 8``.
        content_kan: KAN feed-forward modules in the ``"mel"`` content stream too (default: the Conformer's MLPs).
        use_temporal_stream: the wav2vec2 temporal stream Φ_E^t of the emotion extractor; ``False`` leaves the
            frequency stream alone (with ``content_encoder_type="mel"`` the model has no wav2vec2 at all).
        mel_normalization: ``"utterance"`` subtracts each clip's mean log-mel per bin (over its valid frames)
            before the mel streams: microphone and room colouring are mostly a constant spectral tilt.
        mel_level_feature: add each frame's absolute level (log mel power) as one more mel-stream input, so
            that silence stays distinguishable from speech after ``mel_normalization``.
        emotion_class_weights: per-class weights of L_cls (e.g. inverse class frequencies), or None.
        style_emotion_from_classifier: at inference, retrieve the style of the emotion the classifier
            reports (the retrieval then only chooses the speaker), so the reported emotion and the
            emotion of the style always agree.
        style_confidence_full: at inference, classifier confidence (max probability) at which the
            retrieved style is used at full intensity; below it the style moves linearly towards the
            speaker's neutral style (reached at chance level). None = always full.
        streaming_lookahead_frames: ``None`` (default) = the offline model: every frame sees the whole
            clip. An integer ``L ≥ 0`` = the streaming mode (``content_encoder_type="mel"`` without the
            temporal stream): frames are grouped in chunks of ``L + 1`` on the absolute 30 fps grid and
            every layer (attention, convolutions, mel normalisation, the 100 Hz → 30 fps resampling,
            the style) lets a frame read only frames of its own chunk or earlier, so frame ``t`` depends
            on audio up to the end of frame ``t + L`` plus half an STFT window (``mel_win_length / 2``
            samples) and no further, whatever the depth. The masks have no weights: an offline model
            runs in this mode unchanged (then fine-tune with the masks on for quality).
        streaming_left_context_frames: streaming mode: how many past frames each attention layer may read
            (``None`` = all). Bounded, a frame's receptive field is finite
            (:func:`~modeling_pestalk.streaming_receptive_field`) and a sliding-window streamer is exact.
        streaming_mel_norm_frames: streaming mode: ``mel_normalization="utterance"`` becomes a running mean
            over the last this-many mel frames (100 Hz) up to the end of the frame's chunk.
        streaming_mel_prior: streaming mode: a global mean log-mel per bin (e.g. of the training data,
            ``pestalk_hf.streaming.estimate_mel_prior``) that fills the running mean's window while fewer
            than ``streaming_mel_prior_frames`` mel frames have been heard (Kaldi's online CMN with global
            stats): without it the first frames of a stream are normalised by their own few frames.
        streaming_mel_prior_frames: streaming mode: weight (in mel frames) of ``streaming_mel_prior`` at the
            start of a stream; it shrinks frame by frame to 0 once that many frames have been heard.
        streaming_emotion_frames: streaming mode: the pooled emotion features behind style retrieval are a
            running mean over the last this-many frames (30 fps) up to the end of the current chunk.
        streaming_style_update_frames: streaming mode: the emotion/style clock; the style is re-estimated
            every this-many frames (rounded to whole chunks), not every frame.
        streaming_style_fade_frames: streaming mode: a new style is cross-faded in over this many frames.
        streaming_emotion_smoothing: streaming mode: weight of a new estimate in the exponential moving
            average of the emotion probabilities (1 = no smoothing).
        streaming_emotion_hysteresis: streaming mode: the held emotion changes only when another emotion's
            smoothed probability exceeds it by this margin (0 = plain arg-max), so the face does not
            flicker between two close emotions.
        streaming_emotion_prior: streaming mode: the emotion a stream starts from (the smoothed
            probabilities start as its one-hot, so the first noisy estimates over a few frames do not
            decide the face); None = the first estimate.
    """

    model_type = "pestalk"

    def __init__(
        self,
        content_encoder_config: dict[str, Any] | None = None,
        emotion_encoder_config: dict[str, Any] | None = None,
        sampling_rate: int = 16000,
        fps: int = 30,
        num_mel_bins: int = 80,
        mel_n_fft: int = 512,
        mel_win_length: int = 400,
        mel_hop_length: int = 160,
        use_frequency_stream: bool = True,
        freq_hidden_size: int = 64,
        freq_num_blocks: int = 2,
        freq_num_heads: int = 4,
        freq_conv_kernel_size: int = 15,
        kan_grid_size: int = 5,
        kan_spline_order: int = 3,
        kan_ffn_expansion: int = 2,
        feature_size: int = 256,
        emotions: list[str] | tuple[str, ...] = MEAD_EMOTIONS,
        voiceprint_dim: int = 256,
        voiceprint_backend: str = "resemblyzer",
        style_speakers: list[str] | tuple[str, ...] = (),
        use_style_library: bool = True,
        style_dim: int = 128,
        style_retrieval_top_k: int = 1,
        style_retrieval_temperature: float = 0.05,
        decoder_hidden_size: int = 64,
        decoder_num_heads: int = 4,
        decoder_num_layers: int = 2,
        decoder_ffn_dim: int = 128,
        period: int = 30,
        dropout: float = 0.1,
        blendshape_names: list[str] | tuple[str, ...] = ARKIT_BLENDSHAPE_NAMES,
        lower_face_names: list[str] | tuple[str, ...] = DEFAULT_LOWER_FACE_NAMES,
        loss_weight_position: float = 1.0,
        loss_weight_motion: float = 0.5,
        loss_weight_classification: float = 0.1,
        loss_weight_disentanglement: float = 0.01,
        interpolate_before_transformer: bool = True,
        freeze_feature_encoder: bool = True,
        chunk_seconds: float = 20.0,
        chunk_overlap_seconds: float = 2.0,
        clamp_output: bool = True,
        content_encoder_type: str = "wav2vec2",
        content_hidden_size: int = 128,
        content_num_blocks: int = 2,
        content_num_heads: int = 4,
        content_kan: bool = False,
        whisper_d_model: int = 512,
        whisper_num_layers: int = 3,
        whisper_num_heads: int = 8,
        whisper_ffn_dim: int = 2048,
        whisper_num_mel_bins: int = 80,
        whisper_max_positions: int = 1500,
        whisper_freeze: bool = True,
        whisper_log_floor: float | None = -7.0,
        use_temporal_stream: bool = True,
        mel_normalization: str = "none",
        mel_level_feature: bool = False,
        emotion_class_weights: list[float] | None = None,
        style_emotion_from_classifier: bool = False,
        style_confidence_full: float | None = None,
        streaming_lookahead_frames: int | None = None,
        streaming_left_context_frames: int | None = None,
        streaming_mel_norm_frames: int = 300,
        streaming_emotion_frames: int = 90,
        streaming_style_update_frames: int = 15,
        streaming_style_fade_frames: int = 15,
        streaming_emotion_smoothing: float = 0.25,
        streaming_emotion_hysteresis: float = 0.15,
        streaming_mel_prior: list[float] | None = None,
        streaming_mel_prior_frames: int = 300,
        streaming_emotion_prior: str | None = "neutral",
        **kwargs: Any,
    ) -> None:
        self.content_encoder_config = _normalise_encoder_config(content_encoder_config)
        self.emotion_encoder_config = _normalise_encoder_config(emotion_encoder_config)
        self.sampling_rate = sampling_rate
        self.fps = fps
        self.num_mel_bins = num_mel_bins
        self.mel_n_fft = mel_n_fft
        self.mel_win_length = mel_win_length
        self.mel_hop_length = mel_hop_length
        self.use_frequency_stream = use_frequency_stream
        self.freq_hidden_size = freq_hidden_size
        self.freq_num_blocks = freq_num_blocks
        self.freq_num_heads = freq_num_heads
        self.freq_conv_kernel_size = freq_conv_kernel_size
        self.kan_grid_size = kan_grid_size
        self.kan_spline_order = kan_spline_order
        self.kan_ffn_expansion = kan_ffn_expansion
        self.feature_size = feature_size
        self.emotions = list(emotions)
        self.voiceprint_dim = voiceprint_dim
        self.voiceprint_backend = voiceprint_backend
        self.style_speakers = list(style_speakers)
        self.use_style_library = use_style_library
        self.style_dim = style_dim
        self.style_retrieval_top_k = style_retrieval_top_k
        self.style_retrieval_temperature = style_retrieval_temperature
        self.decoder_hidden_size = decoder_hidden_size
        self.decoder_num_heads = decoder_num_heads
        self.decoder_num_layers = decoder_num_layers
        self.decoder_ffn_dim = decoder_ffn_dim
        self.period = period
        self.dropout = dropout
        self.blendshape_names = list(blendshape_names)
        self.lower_face_names = list(lower_face_names)
        self.loss_weight_position = loss_weight_position
        self.loss_weight_motion = loss_weight_motion
        self.loss_weight_classification = loss_weight_classification
        self.loss_weight_disentanglement = loss_weight_disentanglement
        self.interpolate_before_transformer = interpolate_before_transformer
        self.freeze_feature_encoder = freeze_feature_encoder
        self.chunk_seconds = chunk_seconds
        self.chunk_overlap_seconds = chunk_overlap_seconds
        self.clamp_output = clamp_output
        self.content_encoder_type = content_encoder_type
        self.content_hidden_size = content_hidden_size
        self.content_num_blocks = content_num_blocks
        self.content_num_heads = content_num_heads
        self.content_kan = content_kan
        self.whisper_d_model = whisper_d_model
        self.whisper_num_layers = whisper_num_layers
        self.whisper_num_heads = whisper_num_heads
        self.whisper_ffn_dim = whisper_ffn_dim
        self.whisper_num_mel_bins = whisper_num_mel_bins
        self.whisper_max_positions = whisper_max_positions
        self.whisper_freeze = whisper_freeze
        self.whisper_log_floor = None if whisper_log_floor is None else float(whisper_log_floor)
        self.use_temporal_stream = use_temporal_stream
        self.mel_normalization = mel_normalization
        self.mel_level_feature = mel_level_feature
        self.emotion_class_weights = None if emotion_class_weights is None else [float(w) for w in emotion_class_weights]
        self.style_emotion_from_classifier = style_emotion_from_classifier
        self.style_confidence_full = style_confidence_full
        self.streaming_lookahead_frames = streaming_lookahead_frames
        self.streaming_left_context_frames = streaming_left_context_frames
        self.streaming_mel_norm_frames = streaming_mel_norm_frames
        self.streaming_emotion_frames = streaming_emotion_frames
        self.streaming_style_update_frames = streaming_style_update_frames
        self.streaming_style_fade_frames = streaming_style_fade_frames
        self.streaming_emotion_smoothing = streaming_emotion_smoothing
        self.streaming_emotion_hysteresis = streaming_emotion_hysteresis
        self.streaming_mel_prior = None if streaming_mel_prior is None else [float(v) for v in streaming_mel_prior]
        self.streaming_mel_prior_frames = streaming_mel_prior_frames
        self.streaming_emotion_prior = streaming_emotion_prior
        super().__init__(**kwargs)
        self.validate()

    # ------------------------------------------------------------------ derived views
    @property
    def upper_face_names(self) -> list[str]:
        lower = set(self.lower_face_names)
        return [n for n in self.blendshape_names if n not in lower]

    @property
    def lower_face_indices(self) -> list[int]:
        lower = set(self.lower_face_names)
        return [i for i, n in enumerate(self.blendshape_names) if n in lower]

    @property
    def upper_face_indices(self) -> list[int]:
        lower = set(self.lower_face_names)
        return [i for i, n in enumerate(self.blendshape_names) if n not in lower]

    @property
    def is_streaming(self) -> bool:
        """True in the bounded-look-ahead streaming mode (``streaming_lookahead_frames`` set)."""
        return self.streaming_lookahead_frames is not None

    @property
    def num_blendshapes(self) -> int:
        return len(self.blendshape_names)

    @property
    def num_emotions(self) -> int:
        return len(self.emotions)

    @property
    def num_style_speakers(self) -> int:
        return len(self.style_speakers)

    @property
    def samples_per_frame(self) -> float:
        return self.sampling_rate / self.fps

    def num_frames(self, num_samples: int) -> int:
        """Number of animation frames for ``num_samples`` of audio: ceil(seconds × fps)."""
        # Integer arithmetic avoids float round-up at exact frame boundaries.
        return -(-int(num_samples) * self.fps // self.sampling_rate)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ``ValueError`` naming the offending field when the config is inconsistent."""
        positive_ints = (
            "sampling_rate", "fps", "num_mel_bins", "mel_n_fft", "mel_win_length", "mel_hop_length",
            "freq_hidden_size", "freq_num_blocks", "freq_num_heads", "freq_conv_kernel_size",
            "kan_grid_size", "kan_spline_order", "kan_ffn_expansion", "feature_size",
            "voiceprint_dim", "style_dim", "style_retrieval_top_k", "decoder_hidden_size",
            "decoder_num_heads", "decoder_num_layers", "decoder_ffn_dim", "period",
            "content_hidden_size", "content_num_blocks", "content_num_heads",
            "whisper_d_model", "whisper_num_layers", "whisper_num_heads", "whisper_ffn_dim", "whisper_num_mel_bins",
            "whisper_max_positions",
        )
        for field in positive_ints:
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"PESTalkConfig.{field} must be a positive integer, got {value!r}")
        for field in ("chunk_seconds", "style_retrieval_temperature"):
            value = getattr(self, field)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"PESTalkConfig.{field} must be a positive number, got {value!r}")
        if not (0 <= self.chunk_overlap_seconds < self.chunk_seconds / 2):
            raise ValueError(
                "PESTalkConfig.chunk_overlap_seconds must be in [0, chunk_seconds / 2), "
                f"got {self.chunk_overlap_seconds!r} with chunk_seconds={self.chunk_seconds!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"PESTalkConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.content_encoder_type not in ("wav2vec2", "mel", "whisper"):
            raise ValueError("PESTalkConfig.content_encoder_type must be 'wav2vec2', 'mel' or 'whisper', "
                             f"got {self.content_encoder_type!r}")
        floor = self.whisper_log_floor
        if floor is not None and not math.isfinite(floor):
            raise ValueError(f"PESTalkConfig.whisper_log_floor must be a finite number or null, got {floor!r}")
        if self.mel_normalization not in ("none", "utterance"):
            raise ValueError(f"PESTalkConfig.mel_normalization must be 'none' or 'utterance', got {self.mel_normalization!r}")
        if not (self.use_temporal_stream or self.use_frequency_stream):
            raise ValueError("PESTalkConfig: the emotion extractor needs use_temporal_stream or use_frequency_stream")
        weights = self.emotion_class_weights
        if weights is not None and (len(weights) != len(self.emotions) or not all(math.isfinite(w) and w > 0 for w in weights)):
            raise ValueError(f"PESTalkConfig.emotion_class_weights must be {len(self.emotions)} positive numbers "
                             f"(one per emotion) or null, got {weights!r}")
        full = self.style_confidence_full
        if full is not None and not (isinstance(full, (int, float)) and 1.0 / max(len(self.emotions), 1) < full <= 1.0):
            raise ValueError(f"PESTalkConfig.style_confidence_full must be in (1/num_emotions, 1] or null, got {full!r}")
        for field, heads in (("freq_hidden_size", self.freq_num_heads), ("decoder_hidden_size", self.decoder_num_heads),
                             ("content_hidden_size", self.content_num_heads),
                             ("whisper_d_model", self.whisper_num_heads)):
            if getattr(self, field) % heads:
                raise ValueError(
                    f"PESTalkConfig.{field}={getattr(self, field)} must be divisible by its number of heads ({heads})"
                )
        if self.freq_conv_kernel_size % 2 == 0:
            raise ValueError(f"PESTalkConfig.freq_conv_kernel_size must be odd, got {self.freq_conv_kernel_size}")
        for field in ("blendshape_names", "emotions", "style_speakers"):
            names = getattr(self, field)
            if not all(isinstance(n, str) and n for n in names):
                raise ValueError(f"PESTalkConfig.{field} must hold non-empty strings")
            duplicated = sorted({n for n in names if names.count(n) > 1})
            if duplicated:
                raise ValueError(f"PESTalkConfig.{field} has duplicated names: {duplicated}")
        if not self.emotions:
            raise ValueError("PESTalkConfig.emotions must name at least one emotion")
        unknown = [n for n in self.lower_face_names if n not in self.blendshape_names]
        if unknown:
            raise ValueError(f"PESTalkConfig.lower_face_names has names not in blendshape_names: {unknown}")
        if len(set(self.lower_face_names)) != len(self.lower_face_names):
            raise ValueError("PESTalkConfig.lower_face_names lists a name twice")
        if not self.lower_face_names or len(self.lower_face_names) == len(self.blendshape_names):
            raise ValueError(
                "PESTalkConfig.lower_face_names must split blendshape_names into two non-empty parts "
                f"(got {len(self.lower_face_names)} lower of {len(self.blendshape_names)})"
            )
        for field in ("content_encoder_config", "emotion_encoder_config"):
            sub = getattr(self, field)
            strides = sub.get("conv_stride", ())
            if math.prod(strides) != 320:
                raise ValueError(
                    f"PESTalkConfig.{field}.conv_stride must multiply to 320 (50 Hz features at 16 kHz), got {strides}"
                )
        self._validate_streaming()
        if self.sampling_rate != 16000:
            raise ValueError(f"PESTalkConfig.sampling_rate must be 16000 (wav2vec2), got {self.sampling_rate}")

    def _validate_streaming(self) -> None:
        """The streaming fields (checked whatever the mode, so a bad value fails when it is written)."""
        for field in ("streaming_lookahead_frames", "streaming_left_context_frames"):
            value = getattr(self, field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"PESTalkConfig.{field} must be a non-negative integer or null, got {value!r}")
        for field in ("streaming_mel_norm_frames", "streaming_emotion_frames", "streaming_style_update_frames",
                      "streaming_style_fade_frames", "streaming_mel_prior_frames"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"PESTalkConfig.{field} must be a positive integer, got {value!r}")
        if not (isinstance(self.streaming_emotion_smoothing, (int, float)) and 0 < self.streaming_emotion_smoothing <= 1):
            raise ValueError(f"PESTalkConfig.streaming_emotion_smoothing must be in (0, 1], got {self.streaming_emotion_smoothing!r}")
        if not (isinstance(self.streaming_emotion_hysteresis, (int, float)) and 0 <= self.streaming_emotion_hysteresis < 1):
            raise ValueError(f"PESTalkConfig.streaming_emotion_hysteresis must be in [0, 1), got {self.streaming_emotion_hysteresis!r}")
        prior = self.streaming_mel_prior
        if prior is not None and (len(prior) != self.num_mel_bins or not all(math.isfinite(v) for v in prior)):
            raise ValueError(f"PESTalkConfig.streaming_mel_prior must be {self.num_mel_bins} finite numbers "
                             f"(one per mel bin) or null, got {len(prior)} values")
        if not self.is_streaming:
            return
        if self.streaming_emotion_prior is not None and self.streaming_emotion_prior not in self.emotions:
            raise ValueError(f"PESTalkConfig.streaming_emotion_prior must be one of {self.emotions} or null, "
                             f"got {self.streaming_emotion_prior!r}")
        if self.content_encoder_type != "mel" or self.use_temporal_stream:
            raise ValueError("PESTalkConfig.streaming_lookahead_frames needs content_encoder_type='mel' and "
                             "use_temporal_stream=false (the wav2vec2 encoders have no bounded-look-ahead mode)")
        # Resampling 100 Hz → 30 fps reads the mel step after a frame's centre; it stays inside the frame
        # (so inside its chunk) only while a mel hop is shorter than half a frame.
        if 2 * self.mel_hop_length * self.fps >= self.sampling_rate:
            raise ValueError("PESTalkConfig: the streaming mode needs mel_hop_length < half a frame "
                             f"(sampling_rate / fps / 2 = {self.sampling_rate / self.fps / 2:g} samples)")
