"""PESTalk: speech-driven 3D facial animation with personalised emotional styles (ACM MM 2025).

Hub remote code: imports only torch, transformers and same-folder modules.

Data flow (B = batch, N = samples at 16 kHz, T = ceil(N / 16000 × 30) frames, F = feature_size):

    audio (B, N) ─┬─ Φ_E  Dual-Stream Emotion Extractor ── E (B, T, F) ── pooled Ē (B, F) ─→ emotion logits
                  │      ├ temporal: wav2vec2 (conv frozen) → 30 fps → transformer
                  │      └ frequency: log-mel → 30 fps → KAN-Conformer
                  ├─ Φ_C  content encoder: wav2vec2 (conv frozen) → C (B, T, F)
    voiceprint ───┴─ ESMM: query [V ‖ Ē] → cosine retrieval in the ⟨speaker × emotion⟩ library → S → style (B, s)
    Φ_D^low([C ‖ style]) → 32 lower-face;  Φ_D^up([E ‖ style]) → 20 upper-face  →  blendshapes (B, T, 52)

Decisions where the paper is silent or inconsistent are written next to the code that makes them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel, Wav2Vec2Config, Wav2Vec2Model
from transformers.audio_utils import mel_filter_bank
from transformers.utils import ModelOutput

from .configuration_pestalk import PESTalkConfig
from .kan import ConformerBlockCache, KANConformerBlock, KANLinear, conformer_block_step
from .lookahead import StreamingContext, attention_mask, conv_taps_allowed, masked_conv1d, running_mean_within_chunks


# ----------------------------------------------------------------------------------------- helpers
def resample_to_frames(
    features: torch.Tensor,
    num_frames: int,
    fps: float,
    rate: float,
    offset: float = 0.0,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Linearly resample a feature sequence onto the animation frame grid, by time.

    Frame ``t`` is centred at ``(t + 0.5) / fps`` seconds; source step ``s`` at ``offset + s / rate``.
    FaceFormer/EmoTalk stretch the whole sequence (``align_corners``) instead; aligning by time gives
    the same frames whatever the padding or the window a clip is cut from, which batching and
    chunked inference rely on.

    Args:
        features: ``(B, S, D)`` at ``rate`` Hz.
        lengths: ``(B,)`` valid source steps per clip; reads past a clip's end hold its last valid
            step, exactly as for the clip alone, so padding never leaks into valid frames.
    Returns:
        ``(B, num_frames, D)``.
    """
    b, s = features.shape[:2]
    last = torch.full((b,), s - 1, device=features.device) if lengths is None else (lengths.to(features.device) - 1).clamp(0, s - 1)
    t = torch.arange(num_frames, device=features.device, dtype=torch.float32)
    pos = (((t + 0.5) / fps - offset) * rate).clamp_min(0)[None, :]
    pos = torch.minimum(pos, last[:, None].float())
    i0 = pos.floor().long()
    i1 = torch.minimum(i0 + 1, last[:, None])
    w = (pos - i0).to(features.dtype)[..., None]
    gather = lambda idx: features.gather(1, idx[..., None].expand(-1, -1, features.shape[-1]))  # noqa: E731
    return gather(i0) * (1 - w) + gather(i1) * w


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over time of ``(B, T, D)`` using ``mask`` ``(B, T)`` (True = valid) → ``(B, D)``."""
    if mask is None:
        return x.mean(dim=1)
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


def periodic_alibi_bias(num_heads: int, num_frames: int, period: int, device=None) -> torch.Tensor:
    """Non-causal, periodic ALiBi attention bias (FaceFormer's biased mask, made symmetric).

    ``bias[h, i, j] = -m_h · floor(|i - j| / period)`` with ALiBi's geometric head slopes
    ``m_h = 2^(-8 (h + 1) / H)``: frames within one period attend freely, and attention to frames
    further away decays step-wise, which is the "local temporal dependencies" prior of §3.4.
    The decoder is non-autoregressive (all frames in parallel), hence symmetric.

    Returns:
        ``(num_heads, num_frames, num_frames)`` float tensor.
    """
    pos = torch.arange(num_frames, device=device)
    return periodic_alibi_bias_between(num_heads, pos, pos, period)


def periodic_alibi_bias_between(num_heads: int, query_frames: torch.Tensor, key_frames: torch.Tensor,
                                period: int) -> torch.Tensor:
    """:func:`periodic_alibi_bias` for frame indices ``(Q,)`` and ``(K,)`` → ``(num_heads, Q, K)`` (cached streaming)."""
    slopes = torch.tensor([2.0 ** (-8.0 * (h + 1) / num_heads) for h in range(num_heads)], device=query_frames.device)
    distance = torch.div((key_frames[None, :] - query_frames[:, None]).abs(), period, rounding_mode="floor")
    return -slopes[:, None, None] * distance[None].float()


def frame_mask_from_attention_mask(
    attention_mask: torch.Tensor | None, batch_size: int, num_samples: int, config: PESTalkConfig, device
) -> tuple[torch.Tensor, int]:
    """Per-clip valid frames. Returns ``(frame_mask (B, T) bool, T)`` with T for the longest clip."""
    num_frames = config.num_frames(num_samples)
    if attention_mask is None:
        return torch.ones(batch_size, num_frames, dtype=torch.bool, device=device), num_frames
    lengths = attention_mask.long().sum(-1)
    frame_lengths = torch.div(lengths * config.fps + config.sampling_rate - 1, config.sampling_rate, rounding_mode="floor")
    return torch.arange(num_frames, device=device)[None, :] < frame_lengths[:, None], num_frames


# ----------------------------------------------------------------------------------------- output
@dataclass
class PESTalkOutput(ModelOutput):
    """Output of :class:`PESTalkModel`.

    Attributes:
        loss: weighted total loss ``λ1 L_pos + λ2 L_mot + λ3 L_cls + λ4 L_dis`` (when labels are given).
        blendshapes: ``(B, T, 52)`` coefficients (clamped to [0, 1] in eval mode when ``config.clamp_output``).
        emotion_logits: ``(B, num_emotions)`` from the pooled emotion features.
        style_indices: ``(B,)`` flat library index ``speaker * num_emotions + emotion`` of the retrieved
            style (best entry for soft retrieval); -1 when no library entry was used.
        style_similarity: ``(B,)`` cosine similarity of the query to that entry.
        frame_mask: ``(B, T)`` True on valid frames.
        emotion_features / content_features: ``(B, T, F)`` E and C.
        loss_position / loss_motion / loss_classification / loss_disentanglement: the unweighted terms.
        frame_emotion_logits: ``(B, T, num_emotions)`` streaming mode only: log of the smoothed running
            emotion probabilities in effect at each frame (what the style followed; causal).
        silence_pose: ``(B, 52)`` ``animate(return_silence_pose=True)`` only: the model's face on digital silence
            with this clip's style (per-channel median over 1 s), its rest pose for this voice and emotion.
    """

    loss: torch.Tensor | None = None
    blendshapes: torch.Tensor | None = None
    emotion_logits: torch.Tensor | None = None
    style_indices: torch.Tensor | None = None
    style_similarity: torch.Tensor | None = None
    frame_mask: torch.Tensor | None = None
    emotion_features: torch.Tensor | None = None
    content_features: torch.Tensor | None = None
    loss_position: torch.Tensor | None = None
    loss_motion: torch.Tensor | None = None
    loss_classification: torch.Tensor | None = None
    loss_disentanglement: torch.Tensor | None = None
    frame_emotion_logits: torch.Tensor | None = None
    silence_pose: torch.Tensor | None = None


# ----------------------------------------------------------------------------------------- audio encoders
class LogMelSpectrogram(nn.Module):
    """Log-mel front end of the frequency stream: ``(B, N)`` → ``(B, N // hop + 1, num_mel_bins)``."""

    def __init__(self, config: PESTalkConfig) -> None:
        super().__init__()
        self.n_fft, self.hop, self.win = config.mel_n_fft, config.mel_hop_length, config.mel_win_length
        self.num_mel_bins, self.sampling_rate = config.num_mel_bins, config.sampling_rate
        for name, value in self.computed_buffers().items():
            self.register_buffer(name, value, persistent=False)

    def computed_buffers(self) -> dict[str, torch.Tensor]:
        """Buffers derived from the config: not saved (checkpoints stay small); restored by ``_init_weights``."""
        fb = mel_filter_bank(
            num_frequency_bins=self.n_fft // 2 + 1,
            num_mel_filters=self.num_mel_bins,
            min_frequency=0.0,
            max_frequency=self.sampling_rate / 2,
            sampling_rate=self.sampling_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        return {"mel_filters": torch.from_numpy(np.asarray(fb, dtype=np.float32)), "window": torch.hann_window(self.win)}

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        # The STFT and the mel projection run in fp32 whatever the model's dtype: stft has no bf16/fp16
        # kernels and log-power spectra would lose their low end in half precision.
        spec = torch.stft(
            waveform.float(), self.n_fft, self.hop, self.win, self.window.float(), center=True, return_complex=True
        ).abs().pow(2)
        mel = torch.matmul(spec.transpose(1, 2), self.mel_filters.float())
        return torch.log(mel.clamp_min(1e-10)).to(waveform.dtype)


def normalize_log_mel(mel: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Subtract each clip's mean log-mel per bin over its valid frames: ``(B, M, bins)`` → same shape.

    A microphone, a room or a gain change mostly adds a constant per-bin offset to the log spectrum;
    removing it (cepstral mean normalisation) keeps the speech and drops the channel."""
    if lengths is None:
        return mel - mel.mean(dim=1, keepdim=True)
    valid = (torch.arange(mel.shape[1], device=mel.device)[None, :] < lengths[:, None].clamp_min(1)).to(mel.dtype)
    mean = (mel * valid[..., None]).sum(1, keepdim=True) / valid.sum(1).clamp_min(1)[:, None, None]
    return (mel - mean) * valid[..., None]


class MelFrames(nn.Module):
    """Log-mel spectrogram on the 30 fps grid: ``(B, N)`` → ``(B, T, num_mel_bins)`` (optionally after a 1-D
    conv front end at the mel rate, which sees the 10 ms detail that the 30 fps grid would blur)."""

    def __init__(self, config: PESTalkConfig, front_channels: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.mel = LogMelSpectrogram(config)
        # + 1 channel: the frame's absolute level (see forward)
        self.num_features = config.num_mel_bins + int(config.mel_level_feature)
        self.front = None
        if front_channels is not None:
            self.front = nn.Sequential(
                nn.Conv1d(self.num_features, front_channels, 5, padding=2), nn.GELU(),
                nn.Conv1d(front_channels, front_channels, 5, padding=2), nn.GELU(),
            )
            self.num_features = front_channels

    def forward(
        self, waveform: torch.Tensor, frame_mask: torch.Tensor, sample_lengths: torch.Tensor | None,
        stream: StreamingContext | None = None,
        skip_frames: int = 0,
    ) -> torch.Tensor:
        """``(B, N)`` → ``(B, T, num_features)``. ``stream``: bounded look-ahead (running normalisation,
        front-end taps off where they would read a later chunk). ``skip_frames`` (streaming): the caller
        drops that many leading frames, so the conv front end runs only on the mel frames the others
        read (the first ``skip_frames`` output frames are then meaningless)."""
        cfg = self.config
        mel = self.mel(waveform)  # frame m centred at m · hop / sr (center=True)
        lengths = None if sample_lengths is None else sample_lengths // cfg.mel_hop_length + 1
        level = None
        if cfg.mel_level_feature:
            # Per-utterance normalisation removes the absolute level, so digital silence would look like
            # average speech: keep the frame's level, log mean mel power, mapped from [-24, 2] to [-1, 1]
            # (digital silence is -23; speech at full scale has its median near -4, at -40 dB near -13).
            level = ((mel.logsumexp(-1, keepdim=True) - math.log(mel.shape[-1]) + 11.0) / 13.0).clamp(-1.0, 1.0)
        mel_chunks = None if stream is None else stream.mel_chunks(mel.shape[1], mel.device)
        if cfg.mel_normalization == "utterance" and stream is not None:
            # streaming: a running mean over the last frames up to the chunk's end replaces the clip mean
            prior = None if cfg.streaming_mel_prior is None else torch.tensor(cfg.streaming_mel_prior, device=mel.device)
            first = stream.offset * cfg.sampling_rate // (cfg.fps * cfg.mel_hop_length)  # stream's mel index of mel[0]
            mean = running_mean_within_chunks(mel, mel_chunks, cfg.streaming_mel_norm_frames, lengths, prior,
                                              cfg.streaming_mel_prior_frames, first)
            valid = 1.0 if lengths is None else (torch.arange(mel.shape[1], device=mel.device)[None, :]
                                                 < lengths[:, None].clamp_min(1)).to(mel.dtype)[..., None]
            mel = (mel - mean) * valid
        elif cfg.mel_normalization == "utterance":
            mel = normalize_log_mel(mel, lengths)
        if level is not None:
            mel = torch.cat([mel, level], dim=-1)
        offset = 0.0
        if stream is not None and skip_frames > 0:
            # first mel step frame `skip` reads, minus the front end's reach (2 convs × 2) and one for safety
            first = int((skip_frames + 0.5) * cfg.sampling_rate / (cfg.fps * cfg.mel_hop_length)) - 5
            first = max(0, min(first, mel.shape[1] - 1))
            mel, mel_chunks = mel[:, first:], mel_chunks[first:]
            lengths = None if lengths is None else (lengths - first).clamp_min(1)
            offset = first * cfg.mel_hop_length / cfg.sampling_rate
        if self.front is not None and stream is not None:
            h = mel.transpose(1, 2)
            for layer in self.front:
                h = masked_conv1d(h, layer, conv_taps_allowed(mel_chunks, layer.kernel_size[0])) if isinstance(layer, nn.Conv1d) else layer(h)
            mel = h.transpose(1, 2)
        elif self.front is not None:
            mel = self.front(mel.transpose(1, 2)).transpose(1, 2)
        # Resampling reads mel steps i0 ≤ i1 ≤ the frame's centre + one hop: inside the frame (config check).
        return resample_to_frames(mel, frame_mask.shape[1], cfg.fps, cfg.sampling_rate / cfg.mel_hop_length, offset, lengths)


class Wav2Vec2Stream(nn.Module):
    """A wav2vec2 encoder whose conv feature encoder is frozen (§3.1, §3.3), split in two steps so the
    frozen conv features can be computed once and shared by both streams when their weights agree."""

    def __init__(self, config_dict: dict, interpolate_before_transformer: bool, fps: int, freeze_conv: bool = True) -> None:
        super().__init__()
        self.wav2vec2 = Wav2Vec2Model(Wav2Vec2Config(**config_dict))
        self.freeze_conv = freeze_conv
        if freeze_conv:
            self.wav2vec2.feature_extractor._freeze_parameters()
        self.interpolate_before_transformer = interpolate_before_transformer
        self.fps = fps
        # Conv frame s covers samples [320 s, 320 s + receptive field): centre time and rate.
        cfg = self.wav2vec2.config
        stride = math.prod(cfg.conv_stride)
        receptive = 1
        for k, st in zip(reversed(cfg.conv_kernel), reversed(cfg.conv_stride)):
            receptive = (receptive - 1) * st + k
        self.rate = 16000 / stride
        self.offset = receptive / 2 / 16000

    def _to_frames(self, hidden: torch.Tensor, num_frames: int, sample_lengths: torch.Tensor | None) -> torch.Tensor:
        lengths = None if sample_lengths is None else self.wav2vec2._get_feat_extract_output_lengths(sample_lengths)
        return resample_to_frames(hidden, num_frames, self.fps, self.rate, self.offset, lengths)

    @property
    def hidden_size(self) -> int:
        return self.wav2vec2.config.hidden_size

    def conv_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """Conv feature encoder (frozen by default): ``(B, N)`` → ``(B, S, conv_dim)`` at 50 Hz."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_conv):
            return self.wav2vec2.feature_extractor(waveform).transpose(1, 2)

    def transformer(
        self, conv_features: torch.Tensor, frame_mask: torch.Tensor, sample_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Trainable part: ``(B, S, conv_dim)`` → ``(B, T, hidden)`` on the 30 fps grid of ``frame_mask``.
        ``sample_lengths`` ``(B,)``: valid samples per clip of a padded batch."""
        num_frames = frame_mask.shape[1]
        hidden, _ = self.wav2vec2.feature_projection(conv_features)
        if self.interpolate_before_transformer:
            hidden = self._to_frames(hidden, num_frames, sample_lengths)
            return self.wav2vec2.encoder(hidden, attention_mask=frame_mask).last_hidden_state
        # 50 Hz mask from the 30 fps mask: same valid duration.
        s = hidden.shape[1]
        lengths = frame_mask.sum(-1) * s // num_frames
        mask50 = torch.arange(s, device=hidden.device)[None, :] < lengths[:, None].clamp_min(1)
        hidden = self.wav2vec2.encoder(hidden, attention_mask=mask50).last_hidden_state
        return self._to_frames(hidden, num_frames, sample_lengths)


class DualStreamEmotionExtractor(nn.Module):
    """Φ_E: temporal wav2vec2 stream + log-mel KAN-Conformer frequency stream → E (B, T, F) (Eq. 2)."""

    def __init__(self, config: PESTalkConfig) -> None:
        super().__init__()
        self.config = config
        self.temporal = None
        proj_in = 0
        if config.use_temporal_stream:
            self.temporal = Wav2Vec2Stream(
                config.emotion_encoder_config, config.interpolate_before_transformer, config.fps, config.freeze_feature_encoder
            )
            proj_in = self.temporal.hidden_size
        if config.use_frequency_stream:
            self.mel = MelFrames(config)
            bins = self.mel.num_features
            self.freq_in = nn.Sequential(nn.LayerNorm(bins), nn.Linear(bins, config.freq_hidden_size))
            self.freq_blocks = nn.ModuleList(
                KANConformerBlock(
                    config.freq_hidden_size,
                    config.freq_num_heads,
                    config.freq_conv_kernel_size,
                    config.kan_ffn_expansion,
                    config.kan_grid_size,
                    config.kan_spline_order,
                    config.dropout,
                )
                for _ in range(config.freq_num_blocks)
            )
            proj_in += config.freq_hidden_size
        self.proj = nn.Linear(proj_in, config.feature_size)
        self.classifier = nn.Linear(config.feature_size, config.num_emotions)

    def frequency_stream(
        self, waveform: torch.Tensor, frame_mask: torch.Tensor, sample_lengths: torch.Tensor | None = None,
        stream: StreamingContext | None = None,
        skip_frames: int = 0,
    ) -> torch.Tensor:
        """``(B, N)`` → E_f ``(B, T - skip_frames, freq_hidden_size)`` (see :meth:`PESTalkModel.encode`)."""
        h = self.freq_in(self.mel(waveform, frame_mask, sample_lengths, stream, skip_frames))
        h, frame_mask, stream = _skip(h, frame_mask, stream, skip_frames)
        for block in self.freq_blocks:
            h = block(h, frame_mask, stream)
        return h

    def forward(
        self,
        waveform: torch.Tensor,
        conv_features: torch.Tensor | None,
        frame_mask: torch.Tensor,
        sample_lengths: torch.Tensor | None = None,
        stream: StreamingContext | None = None,
        skip_frames: int = 0,
    ) -> torch.Tensor:
        """Returns E ``(B, T, F)``. ``conv_features``: the temporal stream's conv features (None without it).
        ``stream`` / ``skip_frames``: bounded look-ahead (the config rules out the temporal stream in that
        mode), see :meth:`PESTalkModel.encode`."""
        parts = []
        if self.temporal is not None:
            parts.append(self.temporal.transformer(conv_features, frame_mask, sample_lengths))
        if self.config.use_frequency_stream:
            parts.append(self.frequency_stream(waveform, frame_mask, sample_lengths, stream, skip_frames))
        return self.proj(torch.cat(parts, dim=-1))


class ContentEncoder(nn.Module):
    """Φ_C: wav2vec2 (conv frozen, transformer fine-tuned) + linear projection → C (B, T, F) (Eq. 5)."""

    def __init__(self, config: PESTalkConfig) -> None:
        super().__init__()
        self.stream = Wav2Vec2Stream(
            config.content_encoder_config, config.interpolate_before_transformer, config.fps, config.freeze_feature_encoder
        )
        self.proj = nn.Linear(self.stream.hidden_size, config.feature_size)

    def forward(
        self, conv_features: torch.Tensor, frame_mask: torch.Tensor, sample_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.proj(self.stream.transformer(conv_features, frame_mask, sample_lengths))


class MelContentEncoder(nn.Module):
    """Φ_C for models trained from scratch (``content_encoder_type="mel"``): log-mel → 1-D conv front end
    at 100 Hz → 30 fps → Conformer blocks (MLP feed-forward unless ``content_kan``: the paper makes only
    the frequency stream KAN, and KAN layers cost ~10× an MLP on a CPU) → projection. ``(B, N)`` → C ``(B, T, F)``."""

    def __init__(self, config: PESTalkConfig) -> None:
        super().__init__()
        h = config.content_hidden_size
        self.frames = MelFrames(config, front_channels=h)
        self.blocks = nn.ModuleList(
            KANConformerBlock(h, config.content_num_heads, config.freq_conv_kernel_size, config.kan_ffn_expansion,
                              config.kan_grid_size, config.kan_spline_order, config.dropout, kan=config.content_kan)
            for _ in range(config.content_num_blocks)
        )
        self.proj = nn.Linear(h, config.feature_size)

    def forward(
        self, waveform: torch.Tensor, frame_mask: torch.Tensor, sample_lengths: torch.Tensor | None = None,
        stream: StreamingContext | None = None,
        skip_frames: int = 0,
    ) -> torch.Tensor:
        h = self.frames(waveform, frame_mask, sample_lengths, stream, skip_frames)
        h, frame_mask, stream = _skip(h, frame_mask, stream, skip_frames)
        for block in self.blocks:
            h = block(h, frame_mask, stream)
        return self.proj(h)


# ----------------------------------------------------------------------------------------- ESMM
class EmotionalStyleLibrary(nn.Module):
    """The ⟨speaker × emotion⟩ style library 𝓛 of §3.2, stored as persistent buffers.

    Buffers (saved with the weights):
        speaker_voiceprints ``(K, Dv)``: R_i, running mean of the speaker's clip voiceprints.
        speaker_counts ``(K,)``: clips accumulated into R_i.
        emotion_features ``(K, C, F)``: running mean of pooled E per (speaker, emotion).
        emotion_counts ``(K, C)``: clips accumulated per entry.

    Entries are ``P_ic = [R̂_i ‖ Ê_ic]`` and the query is ``[V̂ ‖ Ê]`` — the same order on both sides
    (the paper writes both orders). Decision: each half is L2-normalised before concatenation (the hat),
    so the voiceprint and the emotion halves weigh equally in the cosine distance of Eq. 4 whatever
    their raw scales (Resemblyzer vectors are unit-norm, E is not).
    """

    def __init__(self, num_speakers: int, num_emotions: int, voiceprint_dim: int, feature_size: int) -> None:
        super().__init__()
        self.register_buffer("speaker_voiceprints", torch.zeros(num_speakers, voiceprint_dim))
        self.register_buffer("speaker_counts", torch.zeros(num_speakers))
        self.register_buffer("emotion_features", torch.zeros(num_speakers, num_emotions, feature_size))
        self.register_buffer("emotion_counts", torch.zeros(num_speakers, num_emotions))

    @property
    def num_speakers(self) -> int:
        return self.emotion_counts.shape[0]

    @property
    def num_emotions(self) -> int:
        return self.emotion_counts.shape[1]

    @staticmethod
    def style_vector(voiceprint: torch.Tensor, emotion: torch.Tensor) -> torch.Tensor:
        """``[normalise(voiceprint) ‖ normalise(emotion)]``: ``(..., Dv)``, ``(..., F)`` → ``(..., Dv + F)``."""
        return torch.cat([F.normalize(voiceprint.float(), dim=-1), F.normalize(emotion.float(), dim=-1)], dim=-1)

    def entries(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All styles ``(K·C, Dv + F)`` (flat index = speaker·C + emotion) and their validity ``(K·C,)``."""
        k, c = self.num_speakers, self.num_emotions
        voice = self.speaker_voiceprints[:, None, :].expand(k, c, -1)
        styles = self.style_vector(voice, self.emotion_features).reshape(k * c, -1)
        valid = (self.emotion_counts > 0).reshape(-1)
        return styles, valid

    @torch.no_grad()
    def update(
        self,
        speaker_ids: torch.Tensor,
        emotion_ids: torch.Tensor,
        pooled_emotion: torch.Tensor,
        voiceprints: torch.Tensor | None = None,
        max_count: int | None = None,
    ) -> None:
        """Fold a batch into the running means.

        With ``max_count=None`` the entries are exact means of all clips seen (order-independent). With
        ``max_count=K`` an entry's count stops at K, so it becomes an exponential moving average that
        remembers about the last K clips: what training needs, because the extractor producing E keeps
        changing and a mean over the whole run would hand the decoder stale styles (see
        ``TrainingConfig.library_memory``). Voiceprints come from a fixed backend and always use exact means.

        Args:
            speaker_ids / emotion_ids: ``(B,)`` long.
            pooled_emotion: ``(B, F)`` pooled E of each clip.
            voiceprints: ``(B, Dv)`` or None (speaker means untouched).
            max_count: cap of the per-entry counts of the emotion features, or None.
        """
        if max_count is not None and max_count < 1:
            raise ValueError(f"max_count must be a positive integer or None, got {max_count}")
        c = self.num_emotions
        flat = speaker_ids.long() * c + emotion_ids.long()
        self._running_mean(self.emotion_features.view(-1, self.emotion_features.shape[-1]), self.emotion_counts.view(-1),
                           flat, pooled_emotion, max_count)
        if voiceprints is not None:
            self._running_mean(self.speaker_voiceprints, self.speaker_counts, speaker_ids.long(), voiceprints)

    @staticmethod
    def _running_mean(means: torch.Tensor, counts: torch.Tensor, index: torch.Tensor, values: torch.Tensor,
                      max_count: int | None = None) -> None:
        sums = torch.zeros_like(means).index_add_(0, index, values.to(means.dtype))
        added = torch.zeros_like(counts).index_add_(0, index, torch.ones_like(index, dtype=counts.dtype))
        total = counts + added
        touched = added > 0
        means[touched] = (means[touched] * counts[touched, None] + sums[touched]) / total[touched, None]
        counts.copy_(total if max_count is None else total.clamp(max=max_count))

    def retrieve(
        self,
        query: torch.Tensor,
        force_emotion: torch.Tensor | None = None,
        force_speaker: torch.Tensor | None = None,
        top_k: int = 1,
        temperature: float = 0.05,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Nearest library style by cosine distance (Eqs. 3–4), with overrides.

        Args:
            query: ``(B, Dv + F)`` from :meth:`style_vector`.
            force_emotion / force_speaker: ``(B,)`` long, -1 = free; restrict the candidates.
            top_k: 1 = arg-min of Eq. 3; k > 1 = softmax(similarity / temperature) over the k nearest.
        Returns:
            style ``(B, Dv + F)``, best flat index ``(B,)``, its cosine similarity ``(B,)``.
        """
        styles, valid = self.entries()
        styles, valid = styles.to(query.device), valid.to(query.device)
        b, c = query.shape[0], self.num_emotions
        sim = F.normalize(query.float(), dim=-1) @ F.normalize(styles, dim=-1).T  # (B, K·C)
        allowed = valid[None, :].expand(b, -1).clone()
        flat = torch.arange(styles.shape[0], device=query.device)
        if force_emotion is not None:
            fe = force_emotion.to(query.device)[:, None]
            allowed &= (fe < 0) | (flat[None, :] % c == fe)
        if force_speaker is not None:
            fs = force_speaker.to(query.device)[:, None]
            allowed &= (fs < 0) | (flat[None, :] // c == fs)
        if not bool(allowed.any(dim=1).all()):
            bad = (~allowed.any(dim=1)).nonzero().flatten().tolist()
            raise ValueError(
                f"style library has no entry matching the requested speaker/emotion for batch items {bad}"
            )
        sim = sim.masked_fill(~allowed, float("-inf"))
        k = min(top_k, int(allowed.sum(dim=1).min()))
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = torch.softmax(top_sim / temperature, dim=1) if k > 1 else torch.ones_like(top_sim)
        style = torch.einsum("bk,bkd->bd", weights, styles[top_idx])
        return style, top_idx[:, 0], top_sim[:, 0]

    def neutral_style(self, speaker: torch.Tensor, neutral_index: int | None) -> torch.Tensor:
        """Baseline style of each speaker ``(B,)`` → ``(B, Dv + F)``: its neutral entry, else the mean
        of its valid entries (for intensity interpolation)."""
        styles, valid = self.entries()
        c = self.num_emotions
        per_speaker = styles.view(self.num_speakers, c, -1)[speaker]
        ok = valid.view(self.num_speakers, c)[speaker]
        if neutral_index is not None:
            has_neutral = ok[:, neutral_index]
            mean = (per_speaker * ok[..., None]).sum(1) / ok.sum(1, keepdim=True).clamp_min(1)
            return torch.where(has_neutral[:, None], per_speaker[:, neutral_index], mean)
        return (per_speaker * ok[..., None]).sum(1) / ok.sum(1, keepdim=True).clamp_min(1)


# ----------------------------------------------------------------------------------------- decoders
class PeriodicPositionalEncoding(nn.Module):
    """Sinusoidal encoding repeated every ``period`` frames (FaceFormer's PPE)."""

    def __init__(self, d_model: int, period: int, dropout: float) -> None:
        super().__init__()
        self.d_model, self.period = d_model, period
        self.register_buffer("pe", self.computed_buffers()["pe"], persistent=False)
        self.dropout = nn.Dropout(dropout)

    def computed_buffers(self) -> dict[str, torch.Tensor]:
        pos = torch.arange(self.period, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, self.d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / self.d_model))
        pe = torch.zeros(self.period, self.d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)[:, : self.d_model // 2]
        return {"pe": pe}

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """``(B, T, d)`` → ``(B, T, d)``; ``offset`` = index of the first frame (chunked inference)."""
        idx = (torch.arange(x.shape[1], device=x.device) + offset) % self.period
        return self.dropout(x + self.pe[idx].to(x.dtype))


class DecoderLayerCache:
    """What one decoder layer keeps between chunks of a stream (see :class:`~.kan.ConformerBlockCache`): its
    attention keys and values ``(1, heads, ≤ left, d_head)`` of the frames before :attr:`next_frame`."""

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.next_frame = 0


class BiasedSelfAttentionLayer(nn.Module):
    """Pre-LN transformer layer whose self-attention adds the periodic ALiBi bias."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model))
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor, cache: DecoderLayerCache | None = None,
                keep: int = 0) -> torch.Tensor:
        """``x`` ``(B, T, d)``; ``attn_bias`` ``(B, H, T, K)`` additive (bias + padding) → ``(B, T, d)``.

        ``cache`` (cached streaming, :meth:`StyleGuidedDecoder.step`): the keys and values it holds of earlier
        frames come before ``x``'s own (``K = cached + T``); it then keeps the last ``keep`` of them."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            if cache.keys is not None:
                k, v = torch.cat([cache.keys, k], 2), torch.cat([cache.values, v], 2)
            cache.keys, cache.values = (k[:, :, -keep:], v[:, :, -keep:]) if keep else (None, None)
        h = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_bias.to(q.dtype), dropout_p=self.attn_dropout if self.training else 0.0
        )
        x = x + self.dropout(self.out(h.transpose(1, 2).reshape(b, t, d)))
        return x + self.dropout(self.ffn(self.norm2(x)))


class StyleGuidedDecoder(nn.Module):
    """One partition of the style-guided fusion decoder (Φ_D^low or Φ_D^up, §3.4): input projection,
    periodic positional encoding, ALiBi-biased self-attention layers, FFN, zero-initialised output."""

    def __init__(self, in_dim: int, out_dim: int, config: PESTalkConfig) -> None:
        super().__init__()
        d = config.decoder_hidden_size
        self.num_heads, self.period = config.decoder_num_heads, config.period
        self.in_proj = nn.Linear(in_dim, d)
        self.ppe = PeriodicPositionalEncoding(d, config.period, config.dropout)
        self.layers = nn.ModuleList(
            BiasedSelfAttentionLayer(d, config.decoder_num_heads, config.decoder_ffn_dim, config.dropout)
            for _ in range(config.decoder_num_layers)
        )
        self.norm = nn.LayerNorm(d)
        self.output = nn.Linear(d, out_dim)
        self.output.zero_init = True  # read by PESTalkPreTrainedModel._init_weights

    def forward(
        self, features: torch.Tensor, frame_mask: torch.Tensor, offset: int = 0, stream: StreamingContext | None = None
    ) -> torch.Tensor:
        """``features`` ``(B, T, in_dim)``, ``frame_mask`` ``(B, T)`` → ``(B, T, out_dim)``. ``stream``: the
        bounded-look-ahead mask (chunk rule, left context) on top of the periodic bias."""
        t = features.shape[1]
        bias = periodic_alibi_bias(self.num_heads, t, self.period, device=features.device)[None]
        if stream is not None:
            bias = bias + attention_mask(stream.attention_allowed(t, features.device), frame_mask, bias.dtype)[:, None]
        else:
            padding = torch.zeros(frame_mask.shape, dtype=bias.dtype, device=features.device).masked_fill(~frame_mask, float("-inf"))
            bias = bias + padding[:, None, None, :]
        h = self.ppe(self.in_proj(features), offset)
        for layer in self.layers:
            h = layer(h, bias)
        return self.output(self.norm(h))

    def step(self, features: torch.Tensor, caches: list[DecoderLayerCache], stream: StreamingContext) -> torch.Tensor:
        """:meth:`forward` in the streaming mode for the next ``n`` frames of a stream only: ``features``
        ``(1, n, in_dim)`` of frames ``[caches[0].next_frame, … + n)`` (whole chunks but at the stream's end)
        → ``(1, n, out_dim)``, equal to the forward over the whole stream. Each layer attends the cached keys
        and values of at most ``stream.left`` earlier frames (:class:`DecoderLayerCache`), then caches its own."""
        if stream.left is None:
            raise ValueError("cached streaming needs a bounded left context (streaming_left_context_frames)")
        first, n = caches[0].next_frame, features.shape[1]
        h = self.ppe(self.in_proj(features), first)
        for layer, cache in zip(self.layers, caches):
            cached = 0 if cache.keys is None else cache.keys.shape[2]
            key_pos = torch.arange(first - cached, first + n, device=h.device)
            query_pos = key_pos[cached:]
            bias = periodic_alibi_bias_between(self.num_heads, query_pos, key_pos, self.period) + attention_mask(
                stream.allowed_between(query_pos, key_pos), None, h.dtype)
            h = layer(h, bias[None], cache, keep=stream.left)
            cache.next_frame = first + n
        return self.output(self.norm(h))


# ----------------------------------------------------------------------------------------- losses
def position_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 8: squared L2 over the 52 channels per frame, averaged over valid frames. ``(B,T,52)``, mask ``(B,T)``."""
    m = mask.to(pred.dtype)
    return ((pred - target).pow(2).sum(-1) * m).sum() / m.sum().clamp_min(1.0)


def motion_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 9 (as intended): the same on first differences ``x[t+1] − x[t]`` over pairs of valid frames."""
    pair = mask[:, 1:] & mask[:, :-1]
    return position_loss(pred[:, 1:] - pred[:, :-1], target[:, 1:] - target[:, :-1], pair)


def disentanglement_loss(
    content: torch.Tensor, content_pair: torch.Tensor, emotion: torch.Tensor, emotion_pair: torch.Tensor
) -> torch.Tensor:
    """L_dis on pooled features of (emotional, neutral) pairs with the same sentence, ``(B, F)`` each.

    Erratum: Eq. 11 as printed, ``1 − mean[cos(E, Ê) − cos(C, Ĉ)]``, is *minimised* by pushing content
    apart and pulling emotion together — the opposite of §3.3's text and of Eq. 6. We implement the stated
    intent, ``1 − mean[cos(C, Ĉ) − cos(E, Ê)]`` ∈ [−1, 3]: content of the pair together, emotion apart.
    """
    return 1.0 - (F.cosine_similarity(content, content_pair, dim=-1) - F.cosine_similarity(emotion, emotion_pair, dim=-1)).mean()


# ----------------------------------------------------------------------------------------- model
class PESTalkPreTrainedModel(PreTrainedModel):
    config_class = PESTalkConfig
    base_model_prefix = "pestalk"
    main_input_name = "input_values"
    supports_gradient_checkpointing = False
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # wav2vec2 sub-models initialise themselves (transformers dispatches nested PreTrainedModels
        # to their own _init_weights); this covers PESTalk's own layers.
        if hasattr(module, "computed_buffers"):
            # Non-persistent buffers are not in checkpoints: recompute them after (meta-device) loading.
            for name, value in module.computed_buffers().items():
                getattr(module, name).copy_(value)
        if isinstance(module, nn.Linear) and getattr(module, "zero_init", False):
            # Decoder output layers: training starts from the all-zero (rest) pose, as FaceFormer does.
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, KANLinear):
            module.reset_parameters()


class PESTalkModel(PESTalkPreTrainedModel):
    """PESTalk: speech ``(B, N)`` at 16 kHz → 52 ARKit blendshapes ``(B, T, 52)`` at 30 fps.

    The voiceprint (Φ_S) is computed outside the model by a speaker-embedding backend
    (``pestalk_hf.voiceprint``) and passed as ``voiceprint``; without it the voiceprint half of the
    retrieval query is zero and retrieval relies on the emotion half only.
    """

    def __init__(self, config: PESTalkConfig) -> None:
        super().__init__(config)
        self.emotion_extractor = DualStreamEmotionExtractor(config)
        if config.content_encoder_type == "whisper":
            # imported here: whisper_encoder.py imports this module's helpers
            from .whisper_encoder import WhisperContentEncoder

            self.content_encoder = WhisperContentEncoder(config)
        else:
            self.content_encoder = MelContentEncoder(config) if config.content_encoder_type == "mel" else ContentEncoder(config)
        self.style_library = EmotionalStyleLibrary(
            config.num_style_speakers, config.num_emotions, config.voiceprint_dim, config.feature_size
        )
        style_in = config.voiceprint_dim + config.feature_size if config.use_style_library else config.num_emotions
        self.style_projection = nn.Linear(style_in, config.style_dim)
        self.lower_decoder = StyleGuidedDecoder(config.feature_size + config.style_dim, len(config.lower_face_indices), config)
        self.upper_decoder = StyleGuidedDecoder(config.feature_size + config.style_dim, len(config.upper_face_indices), config)
        for name, value in self.computed_buffers().items():
            self.register_buffer(name, value, persistent=False)
        self.post_init()

    def computed_buffers(self) -> dict[str, torch.Tensor]:
        return {
            "lower_index": torch.tensor(self.config.lower_face_indices),
            "upper_index": torch.tensor(self.config.upper_face_indices),
        }

    # ---------------------------------------------------------------- construction from checkpoints
    @classmethod
    def from_sub_models_pretrained(
        cls,
        content_model: str = "jonatasgrosman/wav2vec2-large-xlsr-53-english",
        emotion_model: str = "r-f/wav2vec-english-speech-emotion-recognition",
        **config_kwargs,
    ) -> "PESTalkModel":
        """Paper-size PESTalk (~640M parameters) with both wav2vec2 encoders loaded from pretrained
        checkpoints (needs the Hub or local copies); the rest is freshly initialised.

        ``config_kwargs`` override :class:`PESTalkConfig` fields (the defaults there are small; the paper
        sizes are applied here unless overridden).
        """
        content = Wav2Vec2Model.from_pretrained(content_model)
        emotion = Wav2Vec2Model.from_pretrained(emotion_model)
        paper_sizes = dict(
            freq_hidden_size=256, freq_num_blocks=4, freq_num_heads=4, decoder_hidden_size=256,
            decoder_num_heads=4, decoder_num_layers=2, decoder_ffn_dim=1024, style_dim=128,
        )
        paper_sizes.update(config_kwargs)
        config = PESTalkConfig(
            content_encoder_config=_encoder_config_dict(content.config),
            emotion_encoder_config=_encoder_config_dict(emotion.config),
            **paper_sizes,
        )
        model = cls(config)
        model.content_encoder.stream.wav2vec2.load_state_dict(content.state_dict(), strict=False)
        model.emotion_extractor.temporal.wav2vec2.load_state_dict(emotion.state_dict(), strict=False)
        return model

    # ---------------------------------------------------------------- validation
    def _validate_inputs(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor | None, voiceprint: torch.Tensor | None,
        allow_pcm16: bool = False,
    ) -> None:
        if not isinstance(input_values, torch.Tensor):
            raise TypeError(f"input_values must be a torch.Tensor, got {type(input_values).__name__}")
        if input_values.ndim != 2:
            raise ValueError(f"input_values must be (batch, samples), got shape {tuple(input_values.shape)}")
        pcm16 = allow_pcm16 and input_values.dtype == torch.int16  # finite by construction
        if not input_values.is_floating_point() and not pcm16:
            kinds = "floating point or int16 PCM" if allow_pcm16 else "floating point"
            raise ValueError(f"input_values must be {kinds} (16 kHz waveform), got {input_values.dtype}")
        if not pcm16 and not _all_finite(input_values):
            raise ValueError("input_values contains NaN or Inf samples")
        min_samples = math.ceil(self.config.samples_per_frame)
        if input_values.shape[1] < min_samples:
            raise ValueError(
                f"audio is shorter than one {self.config.fps} fps frame: {input_values.shape[1]} samples < {min_samples}"
            )
        if attention_mask is not None and attention_mask.shape != input_values.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} must equal input_values shape {tuple(input_values.shape)}"
            )
        if voiceprint is not None:
            if voiceprint.shape != (input_values.shape[0], self.config.voiceprint_dim):
                raise ValueError(
                    f"voiceprint must be (batch, {self.config.voiceprint_dim}), got {tuple(voiceprint.shape)}"
                )
            if not torch.isfinite(voiceprint).all():
                raise ValueError("voiceprint contains NaN or Inf")

    def _as_model_dtype(self, *tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        """Float inputs (audio is decoded to fp32) cast to the weights' dtype, so a bf16/fp16 model takes
        fp32 audio. A no-op for fp32 models, including under autocast mixed-precision training."""
        return tuple(None if t is None else t.to(self.dtype) for t in tensors)

    # ---------------------------------------------------------------- building blocks
    def _feature_encoders_identical(self) -> bool:
        """Both conv feature encoders are frozen; when their weights are equal (e.g. both fine-tuned from
        the same wav2vec2 with the conv encoder frozen) the conv features are computed once."""
        if not self.config.freeze_feature_encoder or not self._uses_wav2vec2_content or self.emotion_extractor.temporal is None:
            return False  # trainable convs must each see their own gradient; mel streams have no convs
        a = list(self.content_encoder.stream.wav2vec2.feature_extractor.parameters())
        b = list(self.emotion_extractor.temporal.wav2vec2.feature_extractor.parameters())
        if any(p.is_inference() for p in a + b):
            return _same_tensors(a, b)  # weights made under torch.inference_mode() have no version counter
        # Compared once per weight state, not on every forward: the key changes when either set of
        # weights is replaced (loading, .to()) or modified in place (tensor version counter).
        key = tuple((p.data_ptr(), p._version) for p in a + b)
        if getattr(self, "_conv_identity_cache", (None,))[0] != key:
            self._conv_identity_cache = (key, _same_tensors(a, b))
        return self._conv_identity_cache[1]

    def encode(
        self, input_values: torch.Tensor, frame_mask: torch.Tensor, attention_mask: torch.Tensor | None = None,
        frame_offset: int = 0,
        skip_frames: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run Φ_E and Φ_C. ``(B, N)``, ``(B, T)``, ``(B, N)`` → E ``(B, T, F)``, C ``(B, T, F)``.

        Streaming mode only: ``frame_offset`` = absolute index of the first frame (a window cut from a
        longer stream, starting on whole seconds), so the chunks stay on the absolute grid;
        ``skip_frames`` = drop that many leading frames after the mel front end (which still sees the
        whole window, e.g. for the running normalisation) and before the Conformer blocks, which a
        sliding-window streamer needs only near the new frames; E and C are then ``(B, T - skip, F)``."""
        lengths = None if attention_mask is None else attention_mask.long().sum(-1)
        stream = StreamingContext.from_config(self.config, frame_offset)
        if stream is not None:  # mel streams only (config check): no wav2vec2 conv features
            emotion = self.emotion_extractor(input_values, None, frame_mask, lengths, stream, skip_frames)
            return emotion, self.content_encoder(input_values, frame_mask, lengths, stream, skip_frames)
        if skip_frames:
            raise ValueError("skip_frames is for the streaming mode (streaming_lookahead_frames set)")
        content_conv = self.content_encoder.stream.conv_features(input_values) if self._uses_wav2vec2_content else None
        temporal = self.emotion_extractor.temporal
        emotion_conv = None
        if temporal is not None:
            emotion_conv = content_conv if self._feature_encoders_identical() else temporal.conv_features(input_values)
        emotion = self.emotion_extractor(input_values, emotion_conv, frame_mask, lengths)
        if self._uses_wav2vec2_content:
            content = self.content_encoder(content_conv, frame_mask, lengths)
        else:
            content = self.content_encoder(input_values, frame_mask, lengths)
        return emotion, content

    def new_streaming_cache(self) -> dict[str, list]:
        """Empty per-layer caches for :meth:`encode_step` and :meth:`decode_step` (one stream, from its first
        frame): the Conformer blocks of Φ_E and Φ_C, the layers of both decoders."""
        blocks = {"emotion": self.emotion_extractor.freq_blocks if self.config.use_frequency_stream else [],
                  "content": self.content_encoder.blocks}
        cache: dict[str, list] = {name: [ConformerBlockCache() for _ in stack] for name, stack in blocks.items()}
        for name in ("lower", "upper"):
            cache[name] = [DecoderLayerCache() for _ in range(self.config.decoder_num_layers)]
        return cache

    def decode_step(
        self, emotion: torch.Tensor, content: torch.Tensor, style: torch.Tensor, cache: dict[str, list]
    ) -> torch.Tensor:
        """Streaming mode, cached: :meth:`decode` of the next frames of a stream only. E, C ``(1, n, F)``, style
        ``(1, n, style_dim)`` of frames ``[next, next + n)`` → ``(1, n, 52)``, equal to :meth:`decode` over the
        whole stream (the decoders' layers read the keys and values ``cache`` holds of earlier frames)."""
        stream = StreamingContext.from_config(self.config)
        if stream is None or stream.left is None:
            raise ValueError("decode_step needs the streaming mode with a bounded left context")
        s = style.to(content.dtype)
        lower = self.lower_decoder.step(torch.cat([content, s], dim=-1), cache["lower"], stream)
        upper = self.upper_decoder.step(torch.cat([emotion, s], dim=-1), cache["upper"], stream)
        return self._merge_partitions(lower, upper)

    def _merge_partitions(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """The two decoders' outputs ``(B, T, ·)`` → ``(B, T, 52)`` in ARKit order."""
        out = lower.new_zeros(*lower.shape[:2], self.config.num_blendshapes)
        out[..., self.lower_index] = lower
        out[..., self.upper_index] = upper
        return out

    def encode_step(
        self, input_values: torch.Tensor, frame_offset: int, skip_frames: int,
        cache: dict[str, list], num_frames: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Streaming mode, cached: E, C ``(1, num_frames, F)`` of the ``num_frames`` frames after ``skip_frames``
        of a window ``(1, N)`` that starts at absolute frame ``frame_offset`` (whole seconds), equal to
        :meth:`encode` on the whole stream. Those frames must be final: whole chunks whose audio (with
        the STFT margin) is in the window, or the stream's last frames.

        The mel front ends run on the window (they need its past audio: running normalisation, convs); the
        Conformer blocks run only on the new frames, reading what earlier calls left in ``cache``
        (:meth:`new_streaming_cache`; see :class:`~.kan.ConformerBlockCache`). Calls must follow each other
        frame by frame: the first new frame is the one after the previous call's last."""
        cfg = self.config
        stream = StreamingContext.from_config(cfg, frame_offset)
        if stream is None or stream.left is None or self._uses_wav2vec2_content:
            raise ValueError("encode_step needs the streaming mode with a bounded left context")
        first = frame_offset + skip_frames
        for caches in (cache["emotion"], cache["content"]):
            if any(c.next_frame != first for c in caches):
                raise ValueError(f"encode_step: the cache ends at frame {caches[0].next_frame}, not {first}")
        frame_mask = torch.ones(1, cfg.num_frames(input_values.shape[1]), dtype=torch.bool, device=input_values.device)
        new = slice(skip_frames, skip_frames + num_frames)
        if not 0 < num_frames <= frame_mask.shape[1] - skip_frames:
            raise ValueError(f"encode_step: {num_frames} new frames after {skip_frames} do not fit a window of "
                             f"{frame_mask.shape[1]} frames")

        def run(h: torch.Tensor, blocks: nn.ModuleList, caches: list[ConformerBlockCache]) -> torch.Tensor:
            for block, block_cache in zip(blocks, caches):
                h = conformer_block_step(block, h, block_cache, stream)
            return h

        extractor = self.emotion_extractor
        parts = []
        if cfg.use_frequency_stream:
            h = extractor.freq_in(extractor.mel(input_values, frame_mask, None, stream, skip_frames))[:, new]
            parts.append(run(h, extractor.freq_blocks, cache["emotion"]))
        emotion = extractor.proj(torch.cat(parts, dim=-1))
        h = self.content_encoder.frames(input_values, frame_mask, None, stream, skip_frames)[:, new]
        content = self.content_encoder.proj(run(h, self.content_encoder.blocks, cache["content"]))
        return emotion, content

    @property
    def _uses_wav2vec2_content(self) -> bool:
        return self.config.content_encoder_type == "wav2vec2"

    def _neutral_index(self) -> int | None:
        return self.config.emotions.index("neutral") if "neutral" in self.config.emotions else None

    def select_style(
        self,
        pooled_emotion: torch.Tensor,
        emotion_logits: torch.Tensor,
        voiceprint: torch.Tensor | None = None,
        speaker_ids: torch.Tensor | None = None,
        emotion_labels: torch.Tensor | None = None,
        force_emotion: torch.Tensor | None = None,
        force_speaker: torch.Tensor | None = None,
        intensity: torch.Tensor | None = None,
        top_k: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Style vector before projection ``(B, style_in)``, library index ``(B,)``, similarity ``(B,)``.

        * ``use_style_library=False`` ("w/o ESMM"): one-hot emotion (label in training, forced emotion,
          else the classifier's arg-max), as EMOTE/EmoTalk.
        * training with ``speaker_ids`` and ``emotion_labels`` (library speakers): the true entry
          (teacher forcing), or the query itself while that entry is still empty.
        * otherwise: retrieval (Eqs. 3–4) with the overrides; an empty library falls back to the query
          itself (zero-shot: the input's own voiceprint and emotion are its style).
        * ``intensity`` α: ``neutral_style + α (style − neutral_style)`` of the retrieved speaker.
        """
        b, device, c = pooled_emotion.shape[0], pooled_emotion.device, self.config.num_emotions
        no_index = torch.full((b,), -1, dtype=torch.long, device=device)
        if not self.config.use_style_library:
            emotion = emotion_labels if emotion_labels is not None else emotion_logits.argmax(-1)
            if force_emotion is not None:
                emotion = torch.where(force_emotion >= 0, force_emotion.to(device), emotion)
            onehot = F.one_hot(emotion.long(), c).to(pooled_emotion.dtype)
            if intensity is not None:
                onehot = onehot * intensity.to(onehot.dtype)[:, None]
            return onehot, no_index, torch.ones(b, device=device)

        if voiceprint is None:
            voiceprint = torch.zeros(b, self.config.voiceprint_dim, device=device, dtype=pooled_emotion.dtype)
        query = self.style_library.style_vector(voiceprint, pooled_emotion)
        library = self.style_library
        if speaker_ids is not None and emotion_labels is not None:
            flat = speaker_ids.long() * c + emotion_labels.long()
            styles, valid = library.entries()
            chosen = torch.where(valid[flat][:, None], styles[flat], query)
            sim = F.cosine_similarity(query, chosen, dim=-1)
            return chosen, torch.where(valid[flat], flat, no_index), sim
        if library.num_speakers == 0 or not bool((library.emotion_counts > 0).any()):
            if force_emotion is not None or force_speaker is not None:
                raise ValueError("the style library is empty: forced emotion/speaker styles are unavailable")
            return query, no_index, torch.ones(b, device=device)
        force_emotion, intensity = self._inference_style_policy(emotion_logits, force_emotion, force_speaker, intensity)
        style, index, sim = library.retrieve(
            query, force_emotion, force_speaker, top_k or self.config.style_retrieval_top_k,
            self.config.style_retrieval_temperature,
        )
        if intensity is not None:
            neutral = library.neutral_style(index // c, self._neutral_index())
            style = neutral + intensity.to(style.dtype)[:, None] * (style - neutral)
        return style, index, sim

    def _inference_style_policy(
        self, emotion_logits: torch.Tensor, force_emotion: torch.Tensor | None, force_speaker: torch.Tensor | None,
        intensity: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Retrieval overrides from the classifier (``style_emotion_from_classifier``,
        ``style_confidence_full``); an emotion the caller forced is kept at the caller's intensity.

        The classifier's emotion is chosen among the emotions the library holds a style for (for the
        forced speaker, if any): a class without any entry (e.g. one absent from the training data) is
        never requested from the library."""
        cfg = self.config
        if not cfg.style_emotion_from_classifier and cfg.style_confidence_full is None:
            return force_emotion, intensity
        probs = emotion_logits.float().softmax(-1)
        confidence, predicted = probs.max(-1)
        forced = torch.zeros_like(predicted, dtype=torch.bool) if force_emotion is None else force_emotion.to(predicted.device) >= 0
        if cfg.style_emotion_from_classifier:
            have = self.style_library.emotion_counts.to(probs.device) > 0  # (K, C)
            available = have.any(0).expand_as(probs)
            if force_speaker is not None:
                spk = force_speaker.to(probs.device).long()
                available = torch.where((spk >= 0)[:, None], have[spk.clamp_min(0)], available)
            predicted = probs.masked_fill(~available, -1.0).argmax(-1)
            force_emotion = predicted if force_emotion is None else torch.where(forced, force_emotion.to(predicted.device), predicted)
        if cfg.style_confidence_full is not None:
            scale = confidence_intensity(confidence, cfg.style_confidence_full, probs.shape[-1])
            scale = torch.where(forced, torch.ones_like(scale), scale)
            intensity = scale if intensity is None else intensity.to(scale.dtype) * scale
        return force_emotion, intensity

    def decode(
        self, emotion: torch.Tensor, content: torch.Tensor, style: torch.Tensor, frame_mask: torch.Tensor, offset: int = 0
    ) -> torch.Tensor:
        """Partitioned decoders. E, C ``(B, T, F)``, style ``(B, style_dim)`` or per frame ``(B, T, style_dim)``
        (the streaming style track) → ``(B, T, 52)``. ``offset``: absolute index of the first frame."""
        stream = StreamingContext.from_config(self.config, offset)
        s = style.to(content.dtype) if style.ndim == 3 else style[:, None, :].expand(-1, content.shape[1], -1).to(content.dtype)
        lower = self.lower_decoder(torch.cat([content, s], dim=-1), frame_mask, offset, stream)
        upper = self.upper_decoder(torch.cat([emotion, s], dim=-1), frame_mask, offset, stream)
        return self._merge_partitions(lower, upper)

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        voiceprint: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        labels_mask: torch.Tensor | None = None,
        emotion_labels: torch.Tensor | None = None,
        speaker_ids: torch.Tensor | None = None,
        pair_input_values: torch.Tensor | None = None,
        pair_attention_mask: torch.Tensor | None = None,
        force_emotion: torch.Tensor | None = None,
        force_speaker: torch.Tensor | None = None,
        intensity: torch.Tensor | None = None,
        style_top_k: int | None = None,
        **kwargs,
    ) -> PESTalkOutput:
        """Predict blendshapes (and the losses when labels are given).

        Args:
            input_values: ``(B, N)`` float waveform at 16 kHz.
            attention_mask: ``(B, N)`` 1 = real sample, 0 = padding.
            voiceprint: ``(B, voiceprint_dim)`` speaker embedding of each clip.
            labels: ``(B, T, 52)`` target blendshapes with ``T = ceil(N / 16000 × 30)``.
            labels_mask: ``(B, T)`` valid target frames (default: derived from ``attention_mask``).
            emotion_labels: ``(B,)`` emotion ids for L_cls (and teacher-forced style).
            speaker_ids: ``(B,)`` library speaker ids for teacher-forced style in training (-1 = unknown).
            pair_input_values / pair_attention_mask: ``(B, N')`` the neutral partner of each clip
                (same speaker and sentence) for L_dis.
            force_emotion / force_speaker: ``(B,)`` long, -1 = free (retrieval overrides).
            intensity: ``(B,)`` emotion intensity α (1 = as retrieved, 0 = the speaker's neutral style).
            style_top_k: soft retrieval over the k nearest styles (default ``config.style_retrieval_top_k``).
        Returns:
            :class:`PESTalkOutput`.
        """
        self._validate_inputs(input_values, attention_mask, voiceprint)
        input_values, voiceprint = self._as_model_dtype(input_values, voiceprint)
        b, n = input_values.shape
        frame_mask, num_frames = frame_mask_from_attention_mask(attention_mask, b, n, self.config, input_values.device)
        if labels is not None and labels.shape != (b, num_frames, self.config.num_blendshapes):
            raise ValueError(
                f"labels must be (batch, {num_frames}, {self.config.num_blendshapes}) for {n} samples, got {tuple(labels.shape)}"
            )

        emotion, content = self.encode(input_values, frame_mask, attention_mask)
        pooled_emotion = masked_mean(emotion, frame_mask)
        emotion_logits = self.emotion_extractor.classifier(pooled_emotion)
        teacher_speakers = None
        if self.training and speaker_ids is not None and emotion_labels is not None and self.config.num_style_speakers:
            teacher_speakers = speaker_ids
        if teacher_speakers is not None and bool((teacher_speakers < 0).any()):
            teacher_speakers = None  # mixed batch: fall back to retrieval for all
        frame_emotion_logits = None
        if self.config.is_streaming and not self.training:
            # streaming inference: the style follows a causal running estimate on a slow clock
            tracker = StreamingStyleTracker(self, voiceprint, force_emotion, force_speaker, intensity, style_top_k)
            style, frame_emotion_logits = tracker.run(emotion, frame_mask)
            style_index, style_sim = tracker.index, tracker.similarity
        else:
            style, style_index, style_sim = self.select_style(
                pooled_emotion, emotion_logits, voiceprint,
                speaker_ids=teacher_speakers,
                emotion_labels=emotion_labels if (self.training or not self.config.use_style_library) and labels is not None else None,
                force_emotion=force_emotion, force_speaker=force_speaker, intensity=intensity, top_k=style_top_k,
            )
        blendshapes = self.decode(emotion, content, self.style_projection(style.to(content.dtype)), frame_mask)
        if not self.training and self.config.clamp_output:
            blendshapes = blendshapes.clamp(0.0, 1.0)

        out = PESTalkOutput(
            blendshapes=blendshapes, emotion_logits=emotion_logits, style_indices=style_index,
            style_similarity=style_sim, frame_mask=frame_mask, emotion_features=emotion, content_features=content,
            frame_emotion_logits=frame_emotion_logits,
        )
        if labels is None and emotion_labels is None and pair_input_values is None:
            return out

        cfg = self.config
        total = blendshapes.new_zeros(())
        if labels is not None:
            mask = frame_mask if labels_mask is None else (labels_mask.bool() & frame_mask)
            out.loss_position = position_loss(blendshapes, labels.to(blendshapes.dtype), mask)
            out.loss_motion = motion_loss(blendshapes, labels.to(blendshapes.dtype), mask)
            total = total + cfg.loss_weight_position * out.loss_position + cfg.loss_weight_motion * out.loss_motion
        if emotion_labels is not None:
            class_weights = None
            if cfg.emotion_class_weights is not None:
                class_weights = torch.tensor(cfg.emotion_class_weights, device=emotion_logits.device)
            out.loss_classification = F.cross_entropy(emotion_logits.float(), emotion_labels.long(), weight=class_weights)
            total = total + cfg.loss_weight_classification * out.loss_classification
        if pair_input_values is not None:
            self._validate_inputs(pair_input_values, pair_attention_mask, None)
            (pair_input_values,) = self._as_model_dtype(pair_input_values)
            pb, pn = pair_input_values.shape
            if pb != b:
                raise ValueError(f"pair_input_values batch {pb} must equal input_values batch {b}")
            pair_mask, _ = frame_mask_from_attention_mask(pair_attention_mask, pb, pn, cfg, input_values.device)
            pair_emotion, pair_content = self.encode(pair_input_values, pair_mask, pair_attention_mask)
            out.loss_disentanglement = disentanglement_loss(
                masked_mean(content, frame_mask), masked_mean(pair_content, pair_mask),
                pooled_emotion, masked_mean(pair_emotion, pair_mask),
            )
            total = total + cfg.loss_weight_disentanglement * out.loss_disentanglement
        out.loss = total
        return out

    # ---------------------------------------------------------------- long audio
    @torch.no_grad()
    def animate(
        self,
        waveform: torch.Tensor,
        voiceprint: torch.Tensor | None = None,
        force_emotion: int | None = None,
        force_speaker: int | None = None,
        intensity: float | None = None,
        style_top_k: int | None = None,
        chunk_seconds: float | None = None,
        overlap_seconds: float | None = None,
        return_silence_pose: bool = False,
    ) -> PESTalkOutput:
        """Inference on one clip of any length in bounded memory.

        The clip is cut into windows of ``chunk_seconds`` (whole seconds, so every window starts on the
        30 fps grid and on the positional-encoding period) overlapping by ``overlap_seconds``. Pass 1 runs
        the encoders per window and keeps only E and C (F values per frame each, stored in fp16 for an fp32
        model: the decoder's inputs move by at most 2^-11 relative); the clip-level pooled E (each frame
        counted once, with the cross-fade weights, in full precision) drives emotion classification and
        style retrieval once for the whole clip; pass 2 decodes each window and cross-fades the overlaps
        linearly. Peak memory is that of one window plus what grows with the length: the stored E and C
        (about 1 MB per minute of audio at F = 128) and the output track (0.4 MB per minute).

        Args:
            waveform: ``(N,)`` or ``(1, N)`` at 16 kHz: float, or int16 PCM (sample ``k`` is ``k / 32768``,
                what the pipeline passes: half the memory of fp32; converted one window at a time).
            voiceprint: ``(voiceprint_dim,)`` or ``(1, voiceprint_dim)``.
            return_silence_pose: also return the face on silence with this clip's style (:meth:`silence_pose`).
        Returns:
            :class:`PESTalkOutput` with batch size 1 (no loss terms; features not returned).
        """
        cfg = self.config
        if waveform.ndim == 1:
            waveform = waveform[None]
        if voiceprint is not None and voiceprint.ndim == 1:
            voiceprint = voiceprint[None]
        if waveform.shape[0] != 1:
            raise ValueError(f"animate() takes one clip, got batch {waveform.shape[0]}; use forward() for batches")
        self._validate_inputs(waveform, None, voiceprint, allow_pcm16=True)
        pcm16 = waveform.dtype == torch.int16
        if not pcm16:
            waveform = self._as_model_dtype(waveform)[0]
        (voiceprint,) = self._as_model_dtype(voiceprint)
        sr, fps = cfg.sampling_rate, cfg.fps
        chunk_s = max(1, round(chunk_seconds if chunk_seconds is not None else cfg.chunk_seconds))
        overlap_s = round(overlap_seconds if overlap_seconds is not None else cfg.chunk_overlap_seconds)
        if not 0 <= overlap_s < chunk_s:
            raise ValueError(f"overlap_seconds ({overlap_s}) must be in [0, chunk_seconds={chunk_s})")
        n = waveform.shape[1]
        num_frames = cfg.num_frames(n)
        windows = list(_windows(n, chunk_s * sr, (chunk_s - overlap_s) * sr))
        device = waveform.device

        def as_tensor(value, dtype):
            return None if value is None else torch.tensor([value], dtype=dtype, device=device)

        # Pass 1: encoders per window. Each window's decoder needs that window's own E and C (overlaps are
        # held twice), so they are kept until pass 2, windows end to end in one preallocated (2, frames, F)
        # buffer in _feature_store_dtype (fp16 for fp32 models: ~1 MB per minute of audio instead of 2);
        # pooling and the streaming style use the full-precision features before they are stored.
        min_samples = math.ceil(cfg.samples_per_frame)
        spans = []  # (first frame, frame count, first row in the buffer, cross-fade weights) per window
        row = 0
        for start, stop in windows:
            f0 = start * fps // sr
            t = min(cfg.num_frames(max(stop - start, min_samples)), num_frames - f0)
            w = _crossfade_weights(t, overlap_s * fps, first=start == 0, last=stop >= n, device=device)
            spans.append((f0, t, row, w))
            row += t
        store = torch.empty(2, row, cfg.feature_size, dtype=_feature_store_dtype(self.dtype), device=device)
        weight_total = torch.zeros(num_frames, device=device)
        blended = torch.zeros(1, num_frames, cfg.feature_size, device=device) if cfg.is_streaming else None
        pooled_sum = None
        for (start, stop), (f0, t, row, w) in zip(windows, spans):
            chunk = waveform[:, start:stop]
            if pcm16:
                chunk = (chunk.float() / 32768.0).to(self.dtype)
            if chunk.shape[1] < min_samples:  # a sliver at the end: pad to one frame
                chunk = F.pad(chunk, (0, min_samples - chunk.shape[1]))
            mask = torch.ones(1, cfg.num_frames(chunk.shape[1]), dtype=torch.bool, device=device)
            emotion, content = self.encode(chunk, mask, frame_offset=f0)
            emotion, content = emotion[0, :t], content[0, :t]
            weight_total[f0 : f0 + t] += w
            contribution = (emotion * w[:, None]).sum(0)
            pooled_sum = contribution if pooled_sum is None else pooled_sum + contribution
            if blended is not None:
                blended[0, f0 : f0 + t] += emotion.float() * w[:, None]
            if store.dtype != self.dtype:
                limit = torch.finfo(store.dtype).max
                if float(emotion.abs().max()) > limit or float(content.abs().max()) > limit:
                    store = store.to(self.dtype)  # features beyond fp16's range: keep them exact from here on
            store[0, row : row + t] = emotion
            store[1, row : row + t] = content
        # Pooled in fp32 (sums over minutes of frames), then back to the model's dtype.
        pooled_emotion = (pooled_sum / weight_total.sum())[None].to(self.dtype)
        emotion_logits = self.emotion_extractor.classifier(pooled_emotion)
        style, index, sim = self.select_style(
            pooled_emotion, emotion_logits, voiceprint,
            force_emotion=as_tensor(force_emotion, torch.long), force_speaker=as_tensor(force_speaker, torch.long),
            intensity=as_tensor(intensity, pooled_emotion.dtype), top_k=style_top_k,
        )
        style = self.style_projection(style.to(pooled_emotion.dtype))
        if cfg.is_streaming:
            # streaming mode: the causal style track over the cross-faded E of the whole clip replaces the
            # clip-level style (emotion_logits stay the clip summary)
            blended = (blended / weight_total[None, :, None].clamp_min(1e-8)).to(pooled_emotion.dtype)
            tracker = StreamingStyleTracker(
                self, voiceprint, as_tensor(force_emotion, torch.long), as_tensor(force_speaker, torch.long),
                as_tensor(intensity, pooled_emotion.dtype), style_top_k,
            )
            track, _ = tracker.run(blended, torch.ones(1, num_frames, dtype=torch.bool, device=device))
            del blended
            style = self.style_projection(track.to(pooled_emotion.dtype))
            index, sim = tracker.index, tracker.similarity

        # Pass 2: decode per window, cross-fade.
        out = torch.zeros(num_frames, cfg.num_blendshapes, device=device)
        for f0, t, row, w in spans:
            mask = torch.ones(1, t, dtype=torch.bool, device=device)
            window_style = style[:, f0 : f0 + t] if style.ndim == 3 else style
            emotion = store[0, row : row + t][None].to(self.dtype)
            content = store[1, row : row + t][None].to(self.dtype)
            y = self.decode(emotion, content, window_style, mask, offset=f0)[0]
            out[f0 : f0 + t] += y.float() * w[:, None]
        out /= weight_total[:, None].clamp_min(1e-8)  # in place: no second copy of a long track
        if cfg.clamp_output:
            out.clamp_(0.0, 1.0)
        return PESTalkOutput(
            blendshapes=out[None], emotion_logits=emotion_logits, style_indices=index, style_similarity=sim,
            frame_mask=torch.ones(1, num_frames, dtype=torch.bool, device=device),
            # a streaming style track varies over the clip: its mean stands for the clip's style at rest
            silence_pose=self.silence_pose(style.mean(1) if style.ndim == 3 else style) if return_silence_pose else None,
        )

    @torch.no_grad()
    def silence_pose(self, style: torch.Tensor, seconds: float = 1.0) -> torch.Tensor:
        """The face on ``seconds`` of digital silence for a projected ``style`` ``(B, style_dim)`` →
        ``(B, 52)``, the per-channel median over the frames (clamped to [0, 1] like the output)."""
        cfg = self.config
        n = max(int(round(seconds * cfg.sampling_rate)), math.ceil(cfg.samples_per_frame))
        zeros = torch.zeros(style.shape[0], n, dtype=self.dtype, device=style.device)
        mask = torch.ones(style.shape[0], cfg.num_frames(n), dtype=torch.bool, device=style.device)
        emotion, content = self.encode(zeros, mask)
        pose = self.decode(emotion, content, style.to(self.dtype), mask).float().median(dim=1).values
        return pose.clamp(0.0, 1.0) if cfg.clamp_output else pose

    # ---------------------------------------------------------------- library building
    @torch.no_grad()
    def update_style_library(
        self,
        speaker_ids: torch.Tensor,
        emotion_labels: torch.Tensor,
        pooled_emotion: torch.Tensor,
        voiceprints: torch.Tensor | None = None,
        max_count: int | None = None,
    ) -> None:
        """Fold clips into the library's running means (see :class:`EmotionalStyleLibrary.update`)."""
        self.style_library.update(speaker_ids, emotion_labels, pooled_emotion, voiceprints, max_count)

    def resize_style_library(self, speakers: Iterable[str]) -> None:
        """Re-create the library for a new list of speaker names (existing entries of kept names survive)."""
        speakers = list(speakers)
        old = self.style_library
        old_names = list(self.config.style_speakers)
        new = EmotionalStyleLibrary(len(speakers), self.config.num_emotions, self.config.voiceprint_dim, self.config.feature_size)
        new.to(old.emotion_features.device)
        for i, name in enumerate(speakers):
            if name in old_names:
                j = old_names.index(name)
                new.speaker_voiceprints[i] = old.speaker_voiceprints[j]
                new.speaker_counts[i] = old.speaker_counts[j]
                new.emotion_features[i] = old.emotion_features[j]
                new.emotion_counts[i] = old.emotion_counts[j]
        self.style_library = new
        self.config.style_speakers = speakers


class StreamingStyleTracker:
    """Emotion and style of the streaming mode, on a slower clock than the frames.

    Fed chunk by chunk (:meth:`step`; :meth:`run` for a whole sequence), it keeps the emotion features
    of the last ``streaming_emotion_frames`` frames. Every ``streaming_style_update_frames`` (rounded to
    whole chunks, on the absolute chunk index, so a sliding-window streamer and a full-clip forward agree)
    it classifies their mean, smooths the probabilities (exponential moving average, starting from the
    one-hot of ``streaming_emotion_prior``), updates the held emotion with hysteresis (a new emotion must lead the held one by ``streaming_emotion_hysteresis``),
    retrieves the style of the held emotion (:meth:`PESTalkModel.select_style`, intensity from the
    smoothed confidence as ``style_confidence_full`` says) and cross-fades to it over
    ``streaming_style_fade_frames``. Everything it reads ends at the current chunk: causal.

    Args:
        model: a :class:`PESTalkModel` whose config is in the streaming mode.
        voiceprint: ``(B, voiceprint_dim)`` or None.
        force_emotion / force_speaker / intensity / top_k: the overrides of :meth:`PESTalkModel.forward`.
    """

    def __init__(self, model: "PESTalkModel", voiceprint: torch.Tensor | None = None,
                 force_emotion: torch.Tensor | None = None, force_speaker: torch.Tensor | None = None,
                 intensity: torch.Tensor | None = None, top_k: int | None = None) -> None:
        cfg = model.config
        if not cfg.is_streaming:
            raise ValueError("StreamingStyleTracker needs a config with streaming_lookahead_frames set")
        self.model, self.config = model, cfg
        self.voiceprint, self.force_emotion, self.force_speaker = voiceprint, force_emotion, force_speaker
        self.intensity, self.top_k = intensity, top_k
        self.chunk = cfg.streaming_lookahead_frames + 1
        self.every = max(1, round(cfg.streaming_style_update_frames / self.chunk))
        self._history: list[tuple[torch.Tensor, torch.Tensor]] = []  # (E (B, n, F), mask (B, n)) per chunk
        self._kept = 0
        self.probabilities: torch.Tensor | None = None  # (B, C) smoothed
        self.held: torch.Tensor | None = None  # (B,) long
        self.index: torch.Tensor | None = None
        self.similarity: torch.Tensor | None = None
        self._prior = None if cfg.streaming_emotion_prior is None else cfg.emotions.index(cfg.streaming_emotion_prior)
        if self._prior is not None and cfg.use_style_library and self._library_ready():
            if not bool((model.style_library.emotion_counts[:, self._prior] > 0).any()):
                self._prior = None  # no style of that emotion to start from
        self._from = self._to = None
        self._since = 0

    def _pooled(self) -> torch.Tensor:
        e = torch.cat([h[0] for h in self._history], 1)
        m = torch.cat([h[1] for h in self._history], 1)[..., None].to(e.dtype)
        return (e * m).sum(1) / m.sum(1).clamp_min(1.0)

    def _library_ready(self) -> bool:
        lib = self.model.style_library
        return lib.num_speakers > 0 and bool((lib.emotion_counts > 0).any())

    def _update(self) -> None:
        cfg, model = self.config, self.model
        pooled = self._pooled()
        probs = model.emotion_extractor.classifier(pooled).float().softmax(-1)
        previous = self.probabilities
        if previous is None and self._prior is not None:  # the stream starts from the prior emotion
            previous = torch.zeros_like(probs)
            previous[:, self._prior] = 1.0
            self.held = torch.full((probs.shape[0],), self._prior, dtype=torch.long, device=probs.device)
        self.probabilities = probs if previous is None else previous + cfg.streaming_emotion_smoothing * (probs - previous)
        p = self.probabilities
        candidates = p
        uses_classifier = cfg.style_emotion_from_classifier or not cfg.use_style_library
        if cfg.use_style_library and self._library_ready():
            have = model.style_library.emotion_counts.to(p.device) > 0
            available = have.any(0).expand_as(p)
            if self.force_speaker is not None:
                spk = self.force_speaker.to(p.device).long()
                available = torch.where((spk >= 0)[:, None], have[spk.clamp_min(0)], available)
            candidates = p.masked_fill(~available, -1.0)
        best = candidates.argmax(-1)
        if self.held is None:
            self.held = best
        else:
            lead = p.gather(1, best[:, None])[:, 0] - p.gather(1, self.held[:, None])[:, 0]
            self.held = torch.where((best != self.held) & (lead > cfg.streaming_emotion_hysteresis), best, self.held)
        user = None if self.force_emotion is None else self.force_emotion.to(p.device).long()
        forced = torch.zeros_like(self.held, dtype=torch.bool) if user is None else user >= 0
        force, intensity = self.force_emotion, self.intensity
        if uses_classifier and (not cfg.use_style_library or self._library_ready()):
            force = self.held if user is None else torch.where(forced, user, self.held)
            if cfg.style_confidence_full is not None and cfg.use_style_library:
                scale = confidence_intensity(p.gather(1, self.held[:, None])[:, 0], cfg.style_confidence_full, p.shape[-1])
                scale = torch.where(forced, torch.ones_like(scale), scale)
                intensity = scale if intensity is None else intensity.to(scale.dtype) * scale
        style, self.index, self.similarity = model.select_style(
            pooled, p.clamp_min(1e-12).log().to(pooled.dtype), self.voiceprint,
            force_emotion=force, force_speaker=self.force_speaker, intensity=intensity, top_k=self.top_k,
        )
        if self._to is None:
            self._from = self._to = style
        else:
            self._from, self._to = self._current(), style
        self._since = 0

    def _current(self) -> torch.Tensor:
        w = min(1.0, self._since / self.config.streaming_style_fade_frames)
        return self._from + w * (self._to - self._from)

    def step(self, chunk_index: int, emotion: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """One chunk: E ``(B, n, F)`` of its frames (``mask`` ``(B, n)``, True = valid) → the style of each
        of its frames before projection ``(B, n, style_in)``. ``chunk_index``: absolute chunk number."""
        if mask is None:
            mask = torch.ones(emotion.shape[:2], dtype=torch.bool, device=emotion.device)
        self._history.append((emotion, mask))
        self._kept += emotion.shape[1]
        keep = self.config.streaming_emotion_frames
        while self._kept - self._history[0][0].shape[1] >= keep:
            self._kept -= self._history.pop(0)[0].shape[1]
        if self._kept > keep:  # trim the oldest chunk to exactly `keep` frames
            cut = self._kept - keep
            e, m = self._history[0]
            self._history[0] = (e[:, cut:], m[:, cut:])
            self._kept = keep
        if self._to is None or chunk_index % self.every == 0:
            self._update()
        frames = []
        for _ in range(emotion.shape[1]):
            self._since += 1
            frames.append(self._current())
        return torch.stack(frames, 1)

    def frame_logits(self, num_frames: int) -> torch.Tensor:
        """The smoothed log-probabilities in effect, repeated over ``num_frames``: ``(B, n, C)``."""
        return self.probabilities.clamp_min(1e-12).log()[:, None].expand(-1, num_frames, -1)

    def run(self, emotion: torch.Tensor, frame_mask: torch.Tensor, frame_offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole sequence, chunk by chunk: E ``(B, T, F)``, ``frame_mask`` ``(B, T)`` → per-frame style
        ``(B, T, style_in)`` and the emotion log-probabilities in effect ``(B, T, C)``."""
        t = emotion.shape[1]
        styles, logits = [], []
        start = 0
        while start < t:
            chunk_index = (start + frame_offset) // self.chunk
            stop = min(t, (chunk_index + 1) * self.chunk - frame_offset)
            styles.append(self.step(chunk_index, emotion[:, start:stop], frame_mask[:, start:stop]))
            logits.append(self.frame_logits(stop - start))
            start = stop
        return torch.cat(styles, 1), torch.cat(logits, 1)


def streaming_receptive_field(config: PESTalkConfig) -> dict[str, float | int | None]:
    """Look-ahead and left context of the streaming mode, from the config (no weights needed).

    Returns a dict:
        ``lookahead_frames``: L; frame ``t`` reads audio up to the end of frame ``last(chunk(t)) ≤ t + L``.
        ``margin_samples``: plus this many samples (half an STFT window: a mel frame centred before a
            frame's end reads ``mel_win_length / 2`` samples past its centre).
        ``max_lookahead_seconds`` / ``mean_lookahead_seconds``: audio after the end of a frame that it
            needs, for the first frame of a chunk and on average over a chunk.
        ``left_frames``: frames before ``t`` whose encoder inputs reach the decoder output at ``t``
            (None = unbounded: ``streaming_left_context_frames`` is None).
        ``decoder_left_frames`` / ``encoder_left_frames``: its two parts, decoder layers × left and
            encoder blocks × (left + conv half-kernel); a streamer that caches E and C needs the encoder
            part of the audio only (``encoder_left_samples``); one that also caches the Conformer blocks'
            states (:meth:`PESTalkModel.encode_step`) only the mel front ends' part (``front_end_left_samples``).
        ``left_samples``: audio before the start of frame ``t`` that it may read (None = unbounded):
            decoder layers × left + encoder blocks × (left + conv half-kernel) frames, then the mel
            front end (2 convs × 2 mel frames), the running normalisation window and half an STFT window.
    """
    if not config.is_streaming:
        raise ValueError("streaming_receptive_field needs a config with streaming_lookahead_frames set")
    lookahead, left = config.streaming_lookahead_frames, config.streaming_left_context_frames
    margin = config.mel_win_length // 2
    out: dict[str, float | int | None] = {
        "lookahead_frames": lookahead,
        "margin_samples": margin,
        "max_lookahead_seconds": lookahead / config.fps + margin / config.sampling_rate,
        "mean_lookahead_seconds": lookahead / 2 / config.fps + margin / config.sampling_rate,
        "left_frames": None,
        "left_samples": None,
        "decoder_left_frames": None,
        "encoder_left_frames": None,
        "encoder_left_samples": None,
        "front_end_left_samples": None,
    }
    if left is None:
        return out
    half = config.freq_conv_kernel_size // 2
    encoder_blocks = max(config.content_num_blocks, config.freq_num_blocks if config.use_frequency_stream else 0)
    decoder_frames, encoder_frames = config.decoder_num_layers * left, encoder_blocks * (left + half)
    mel_back = 4 + 1  # content front end: two kernel-5 convs; +1: resampling reads the mel step before a frame's centre
    if config.mel_normalization == "utterance":
        mel_back += config.streaming_mel_norm_frames - 1
    samples_per_frame = config.sampling_rate / config.fps

    def samples(frames: int) -> int:
        return int(math.ceil(frames * samples_per_frame + mel_back * config.mel_hop_length + margin))

    out.update(left_frames=decoder_frames + encoder_frames, left_samples=samples(decoder_frames + encoder_frames),
               decoder_left_frames=decoder_frames, encoder_left_frames=encoder_frames,
               encoder_left_samples=samples(encoder_frames), front_end_left_samples=samples(0))
    return out


def streaming_chunk_ready_samples(config: PESTalkConfig, chunk_index: int) -> int:
    """Samples (from the stream's start) that the frames of chunk ``chunk_index`` depend on, in the
    streaming mode: they are final once this much audio has arrived (and no later sample changes them).

    The chunk's last frame ``e = (c + 1)(L + 1) − 1`` reads mel frames centred before the end of frame
    ``e``; the last one, ``m = ceil((e + 1) · sr / (fps · hop)) − 1``, reads up to sample
    ``m · hop + mel_win_length / 2 − 1``."""
    if not config.is_streaming:
        raise ValueError("streaming_chunk_ready_samples needs a config with streaming_lookahead_frames set")
    end_frame = (chunk_index + 1) * (config.streaming_lookahead_frames + 1)  # exclusive
    hop_fps = config.mel_hop_length * config.fps
    last_mel = -(-end_frame * config.sampling_rate // hop_fps) - 1
    return last_mel * config.mel_hop_length + config.mel_win_length // 2


def _skip(
    h: torch.Tensor, frame_mask: torch.Tensor, stream: StreamingContext | None, skip: int
) -> tuple[torch.Tensor, torch.Tensor, StreamingContext | None]:
    """Drop ``skip`` leading frames of ``h`` ``(B, T, d)`` and its mask; the chunk grid moves with them."""
    if not skip:
        return h, frame_mask, stream
    return h[:, skip:], frame_mask[:, skip:], dataclasses.replace(stream, offset=stream.offset + skip)


def confidence_intensity(confidence: torch.Tensor, full: float, num_classes: int) -> torch.Tensor:
    """Style intensity from classifier confidence ``(B,)``: 0 at chance level, 1 from ``full`` on."""
    chance = 1.0 / num_classes
    return ((confidence - chance) / (full - chance)).clamp(0.0, 1.0)


def _same_tensors(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


def _feature_store_dtype(model_dtype: torch.dtype) -> torch.dtype:
    """dtype in which :meth:`PESTalkModel.animate` keeps E and C between its passes: fp16 for fp32/fp64
    models (half the memory of the part that grows with the length; 2^-11 relative rounding, measured
    max |Δ| 1.6e-4 on the shipped model's coefficients over 30 min), else the model's own 16-bit dtype."""
    return torch.float16 if model_dtype in (torch.float32, torch.float64) else model_dtype


def _all_finite(x: torch.Tensor, block: int = 1 << 20) -> bool:
    """``torch.isfinite(x).all()`` over the last axis in blocks: on a whole clip its temporaries (an
    ``abs`` copy and boolean masks) cost 1.8× the waveform, 0.8 GB for 2 h of 16 kHz audio (issue 11)."""
    return all(bool(torch.isfinite(x[..., i : i + block]).all()) for i in range(0, x.shape[-1], block))


def _windows(num_samples: int, window: int, hop: int):
    """Start/stop sample indices of overlapping windows covering ``[0, num_samples)``."""
    start = 0
    while True:
        stop = min(start + window, num_samples)
        yield start, stop
        if stop >= num_samples:
            return
        start += hop


def _crossfade_weights(num_frames: int, overlap_frames: int, first: bool, last: bool, device) -> torch.Tensor:
    """Linear ramps over the overlaps (in at the start unless first, out at the end unless last).
    Strictly positive so every frame has weight."""
    w = torch.ones(num_frames, device=device)
    ramp_len = min(overlap_frames, num_frames)
    if ramp_len > 0:
        ramp = (torch.arange(ramp_len, device=device, dtype=torch.float32) + 0.5) / ramp_len
        if not first:
            w[:ramp_len] = torch.minimum(w[:ramp_len], ramp)
        if not last:
            w[-ramp_len:] = torch.minimum(w[-ramp_len:], ramp.flip(0))
    return w


def _encoder_config_dict(config: Wav2Vec2Config) -> dict:
    """A wav2vec2 config as a sub-config dict without task heads or training-time masking."""
    d = config.to_dict()
    for key in ("architectures", "id2label", "label2id", "finetuning_task", "num_labels", "problem_type"):
        d.pop(key, None)
    d.update(mask_time_prob=0.0, layerdrop=0.0)
    return d


__all__ = [
    "PESTalkModel", "PESTalkPreTrainedModel", "PESTalkOutput", "StreamingStyleTracker", "streaming_receptive_field",
    "streaming_chunk_ready_samples",
]
