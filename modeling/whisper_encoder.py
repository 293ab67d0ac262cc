"""Φ_C from a pretrained Whisper encoder (``content_encoder_type="whisper"``; optional, off by default).

Hub remote code: imports only torch, transformers and same-folder modules. The weights come from
``pestalk_hf.pretrained_encoders`` (OpenAI Whisper, MIT licence, read from a checksummed registry
package without running its code) and are then part of the model's own safetensors.

Data flow (B = batch, N = samples at 16 kHz, M = N // 160 mel frames at 100 Hz, S = ceil(M / 2) steps at
50 Hz, T = ceil(N / 16000 × 30) frames, d = ``whisper_d_model``, F = ``feature_size``):

    audio (B, N) → Whisper log-mel (B, M, 80) → conv1 k3 s1 + GELU → conv2 k3 s2 + GELU (B, S, d)
      → + positions[:S] → first ``whisper_num_layers`` pre-LN blocks → LayerNorm → 50 Hz → 30 fps (B, T, d)
      → Linear → C (B, T, F)

Decisions:

* **No 30 s padding.** Whisper pads every input to 30 s; its encoder itself is length-agnostic except
  for the learned/sinusoidal position table (1500 × d). We slice the table to the input's S steps, so
  10 s of audio cost a third of 30 s. Inputs longer than the table (> 30 s) are cut into segments of at
  most 1500 steps after the (local) conv stack, each with positions from 0, as Whisper treats 30 s windows;
  ``animate()`` windows are 20 s by default, so each window starts at position 0 too.
* **First N layers.** A linear probe on GRID (r(jawOpen) held-out 0.90 vs 0.81 for log-mel) found the
  first 3 of Whisper-base's 6 layers enough; deeper layers add cost and drift towards text.
* **Final LayerNorm.** Always applied. Whisper's ``ln_post`` was fit to the statistics of the last
  layer; when all the source layers are used its weights are loaded (exact Whisper), when fewer are used
  it keeps unit gain / zero bias, i.e. a plain normalisation of the intermediate residual stream (whose
  scale grows with depth), so the projection sees unit-scale input. It stays trainable either way.
* **Frozen by default** (``whisper_freeze``): conv stack, positions and blocks keep the pretrained
  weights; the final LayerNorm and the projection train. Unfreezing fine-tunes the blocks too.
* **Quiet-input guard.** Whisper clamps its log10-mel at ``clip max − 8``. Speech at an ordinary level
  peaks near 1.4 (LJSpeech/ARCTIC at −20 dB rms: 1.15–1.71), so inside speech the floor is ≈ −6.6
  (normalised −0.65) and that is the silence Whisper knows. A window that is digitally silent, or only
  hiss (an ``animate`` window in a pause), has a tiny max, so nothing is clamped: silence reads −10
  (normalised −1.5) and −100 dB hiss a texture between −1.5 and −1.1, values Whisper never saw inside
  speech, which its convs turn into arbitrary activations. We clamp at ``max(clip max − 8,
  whisper_log_floor)``; the default −7 leaves every clip that peaks above 1 unchanged and maps silence and
  hiss to the constant −0.75, next to Whisper's own pause level. ``whisper_log_floor=None`` = exact Whisper.
* **50 Hz → 30 fps** with :func:`modeling_pestalk.resample_to_frames`, by time (step s centred at s/50 s),
  the same mapping the mel path uses for 100 Hz, so window boundaries and batch padding do not move frames.
* **Padding.** In a batch, keys past a clip's valid steps are masked, the convs read zeros past its end
  (their own padding) and the clamp max is taken per clip over its valid mel frames, so a padded clip
  gives the frames it gives alone (up to the last STFT window: ~1e-5).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers.audio_utils import mel_filter_bank

from .configuration_pestalk import PESTalkConfig
from .modeling_pestalk import resample_to_frames

WHISPER_N_FFT = 400
WHISPER_HOP = 160
WHISPER_RATE = 50.0  # encoder steps per second at 16 kHz (hop 160, conv2 stride 2)


def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's sinusoidal position table ``(length, channels)`` (the init of a from-scratch encoder)."""
    log_inc = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-log_inc * torch.arange(channels // 2, dtype=torch.float32))
    t = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


class WhisperLogMel(nn.Module):
    """Whisper's log-mel front end: ``(B, N)`` → ``(B, N // 160, num_mel_bins)`` with the quiet-input guard.

    STFT n_fft 400 / hop 160 / Hann 400 (centred, reflect), power, Slaney mel 0–8 kHz, log10, clamp at
    ``max(clip max − 8, log_floor)``, then ``(x + 4) / 4``."""

    def __init__(self, num_mel_bins: int = 80, log_floor: float | None = -7.0, sampling_rate: int = 16000) -> None:
        super().__init__()
        self.num_mel_bins, self.log_floor, self.sampling_rate = num_mel_bins, log_floor, sampling_rate
        for name, value in self.computed_buffers().items():
            self.register_buffer(name, value, persistent=False)

    def computed_buffers(self) -> dict[str, torch.Tensor]:
        """Derived from the config, not saved; restored by ``_init_weights`` after meta-device loading."""
        fb = mel_filter_bank(
            num_frequency_bins=WHISPER_N_FFT // 2 + 1, num_mel_filters=self.num_mel_bins, min_frequency=0.0,
            max_frequency=self.sampling_rate / 2, sampling_rate=self.sampling_rate, norm="slaney", mel_scale="slaney",
        )
        return {"mel_filters": torch.from_numpy(np.asarray(fb, dtype=np.float32)), "window": torch.hann_window(WHISPER_N_FFT)}

    @staticmethod
    def num_frames(sample_lengths: torch.Tensor) -> torch.Tensor:
        """Valid mel frames per clip ``(B,)`` (Whisper drops the STFT's last frame)."""
        return torch.div(sample_lengths, WHISPER_HOP, rounding_mode="floor").clamp_min(1)

    def forward(self, waveform: torch.Tensor, sample_lengths: torch.Tensor | None = None) -> torch.Tensor:
        # fp32 whatever the model dtype: log-power spectra lose their low end in half precision.
        spec = torch.stft(waveform.float(), WHISPER_N_FFT, WHISPER_HOP, window=self.window.float(), center=True,
                          return_complex=True)[..., :-1].abs().pow(2)
        log_mel = torch.matmul(spec.transpose(1, 2), self.mel_filters.float()).clamp_min(1e-10).log10()
        if sample_lengths is None:
            peak = log_mel.amax(dim=(1, 2))
        else:
            valid = torch.arange(log_mel.shape[1], device=log_mel.device)[None, :] < self.num_frames(sample_lengths)[:, None]
            peak = log_mel.masked_fill(~valid[..., None], -math.inf).amax(dim=(1, 2))
        floor = peak - 8.0
        if self.log_floor is not None:
            floor = floor.clamp_min(self.log_floor)
        log_mel = torch.maximum(log_mel, floor[:, None, None])
        return (log_mel + 4.0) / 4.0


class WhisperAttention(nn.Module):
    """Multi-head self-attention with a fused q/k/v projection (as CTranslate2 stores it; k has zero bias)."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """``(B, S, d)``, key mask ``(B, S)`` (True = valid) → ``(B, S, d)``."""
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, s, d))


class WhisperBlock(nn.Module):
    """Pre-LN transformer block: ``x + attn(LN(x))``, then ``x + fc2(GELU(fc1(LN(x))))``."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = WhisperAttention(d_model, num_heads)
        self.ffn_norm = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), key_mask)
        return x + self.fc2(F.gelu(self.fc1(self.ffn_norm(x))))


class WhisperEncoder(nn.Module):
    """The Whisper encoder's first ``num_layers`` blocks: log-mel ``(B, M, bins)`` → ``(B, S, d)``, S = ceil(M/2).

    Parameter names are those of the encoder-only safetensors written by
    ``pestalk_hf.pretrained_encoders`` (``conv1.*``, ``conv2.*``, ``positions``, ``layers.{i}.*``)."""

    def __init__(self, num_mel_bins: int, d_model: int, num_heads: int, ffn_dim: int, num_layers: int,
                 max_positions: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(num_mel_bins, d_model, 3, padding=1)
        self.conv2 = nn.Conv1d(d_model, d_model, 3, stride=2, padding=1)
        self.positions = nn.Parameter(whisper_sinusoids(max_positions, d_model))
        self.layers = nn.ModuleList(WhisperBlock(d_model, num_heads, ffn_dim) for _ in range(num_layers))

    @staticmethod
    def num_steps(mel_lengths: torch.Tensor) -> torch.Tensor:
        """Valid 50 Hz steps per clip from valid mel frames ``(B,)`` (conv2: k3, s2, pad 1 → ceil(M / 2))."""
        return torch.div(mel_lengths + 1, 2, rounding_mode="floor")

    def forward(self, log_mel: torch.Tensor, mel_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, M, bins)``, valid mel frames ``(B,)`` → ``(B, S, d)``."""
        x = log_mel.transpose(1, 2).to(self.conv1.weight.dtype)
        if mel_lengths is not None:
            # a padded clip's convs must read past its end exactly what the clip alone reads: the convs'
            # zero padding (not the padding audio's mel, nor conv1's response to it)
            valid = (torch.arange(x.shape[2], device=x.device)[None, :] < mel_lengths[:, None].to(x.device))[:, None, :]
            x = x * valid
        h = F.gelu(self.conv1(x))
        if mel_lengths is not None:
            h = h * valid
        h = F.gelu(self.conv2(h)).transpose(1, 2)  # (B, S, d)
        s, max_pos = h.shape[1], self.positions.shape[0]
        key_mask = None
        if mel_lengths is not None:
            key_mask = torch.arange(s, device=h.device)[None, :] < self.num_steps(mel_lengths)[:, None].to(h.device)
        outputs = []
        # > max_positions steps (> 30 s): segments with positions from 0 each (the conv stack above is local)
        for start in range(0, s, max_pos):
            seg = h[:, start : start + max_pos]
            seg = seg + self.positions[: seg.shape[1]].to(seg.dtype)
            seg_mask = None if key_mask is None else key_mask[:, start : start + max_pos]
            if seg_mask is not None:
                # a clip with no valid step in this segment attends to its first step only (its output is
                # discarded as padding), so no row of the attention is all-masked (NaN)
                seg_mask = seg_mask.clone()
                seg_mask[:, 0] = True
            for layer in self.layers:
                seg = layer(seg, seg_mask)
            outputs.append(seg)
        return torch.cat(outputs, dim=1)


class WhisperContentEncoder(nn.Module):
    """Φ_C from a Whisper encoder: ``(B, N)`` waveform → C ``(B, T, F)`` at ``config.fps``.

    Same call signature as ``MelContentEncoder`` (no streaming mode: the config refuses it)."""

    def __init__(self, config: PESTalkConfig) -> None:
        super().__init__()
        self.config = config
        d = config.whisper_d_model
        self.mel = WhisperLogMel(config.whisper_num_mel_bins, config.whisper_log_floor, config.sampling_rate)
        self.encoder = WhisperEncoder(config.whisper_num_mel_bins, d, config.whisper_num_heads, config.whisper_ffn_dim,
                                      config.whisper_num_layers, config.whisper_max_positions)
        self.ln_post = nn.LayerNorm(d)
        self.proj = nn.Linear(d, config.feature_size)
        self.set_frozen(config.whisper_freeze)

    def set_frozen(self, frozen: bool) -> None:
        """Freeze (or unfreeze) the pretrained part; ``ln_post`` and ``proj`` always train. The flag, not
        ``requires_grad`` (which ``from_pretrained`` does not keep), decides: a frozen encoder runs without
        autograd, so it gets no gradient whatever its parameters say."""
        self.frozen = bool(frozen)
        for p in self.encoder.parameters():
            p.requires_grad_(not frozen)

    def forward(
        self, waveform: torch.Tensor, frame_mask: torch.Tensor, sample_lengths: torch.Tensor | None = None,
        stream: object | None = None, skip_frames: int = 0,
    ) -> torch.Tensor:
        """``(B, N)``, frame mask ``(B, T)``, valid samples ``(B,)`` → ``(B, T, F)``."""
        if stream is not None or skip_frames:
            raise ValueError("content_encoder_type='whisper' has no streaming mode")
        log_mel = self.mel(waveform, sample_lengths)
        mel_lengths = None if sample_lengths is None else self.mel.num_frames(sample_lengths)
        steps = None if mel_lengths is None else self.encoder.num_steps(mel_lengths)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            # frozen: no activations are kept for backward through the encoder (memory and time)
            h = self.encoder(log_mel, mel_lengths)
        h = self.ln_post(h.to(self.ln_post.weight.dtype))
        # step s is centred at s / 50 s (mel frame m at m / 100 s, conv2 output s at mel frame 2s)
        h = resample_to_frames(h, frame_mask.shape[1], self.config.fps, WHISPER_RATE, 0.0, steps)
        return self.proj(h)

    def load_pretrained_encoder(self, state: dict[str, torch.Tensor], source: str = "state dict") -> list[str]:
        """Load an encoder-only state dict (names as written by ``pestalk_hf.pretrained_encoders``).

        Strict: every parameter of ``self.encoder`` must be present with its exact shape, and the only
        extra names allowed are deeper layers (``layers.{i}`` with i ≥ the layers used) and ``ln_post.*``,
        which is loaded only when all the source's layers are used (see the module docstring).
        Returns the names that were ignored. Raises ``ValueError`` naming what does not match."""
        own = self.encoder.state_dict()
        n_used = len(self.encoder.layers)
        layer_ids = {int(k.split(".")[1]) for k in state if k.startswith("layers.") and k.split(".")[1].isdigit()}
        n_source = max(layer_ids) + 1 if layer_ids else 0
        missing = sorted(k for k in own if k not in state)
        wrong = sorted(f"{k}: {tuple(state[k].shape)} (model {tuple(v.shape)})" for k, v in own.items()
                       if k in state and tuple(state[k].shape) != tuple(v.shape))
        ignored, unexpected = [], []
        for k in state:
            if k in own:
                continue
            parts = k.split(".")
            if (parts[0] == "layers" and len(parts) > 1 and parts[1].isdigit() and int(parts[1]) >= n_used) or parts[0] == "ln_post":
                ignored.append(k)
            else:
                unexpected.append(k)
        if missing or wrong or unexpected:
            raise ValueError(
                f"{source} does not fit this Whisper content encoder ({n_used} layers, d_model "
                f"{self.config.whisper_d_model}): missing {missing[:8]}{' …' if len(missing) > 8 else ''}, "
                f"wrong shape {wrong[:8]}, unexpected {sorted(unexpected)[:8]}"
            )
        with torch.no_grad():
            for k, v in own.items():
                v.copy_(state[k].to(v.dtype))
            if n_used == n_source and {"ln_post.weight", "ln_post.bias"} <= set(state):
                if tuple(state["ln_post.weight"].shape) != tuple(self.ln_post.weight.shape):
                    raise ValueError(f"{source}: ln_post.weight has shape {tuple(state['ln_post.weight'].shape)}")
                self.ln_post.weight.copy_(state["ln_post.weight"].to(self.ln_post.weight.dtype))
                self.ln_post.bias.copy_(state["ln_post.bias"].to(self.ln_post.bias.dtype))
                ignored = [k for k in ignored if not k.startswith("ln_post")]
        return sorted(ignored)

