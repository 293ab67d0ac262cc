"""Bounded look-ahead (streaming mode) of PESTalk: the masks every layer applies.

Hub remote code: torch only.

Rule (WeNet/U2-style chunk masking, applied to *every* layer, encoders and decoders alike): frames are
grouped in chunks of ``C = L + 1`` frames on the absolute 30 fps grid (``chunk(t) = (t + offset) // C``);
a position may read a position of its own chunk or of an earlier one, never a later one. Features at
100 Hz (mel frames) belong to the 30 fps frame their centre falls in. The rule is closed under
composition: if every input of a layer at position ``p`` depends only on audio up to the end of
``chunk(p)``, so does its output. Stacking layers therefore never grows the look-ahead, unlike
per-layer "t + L" masks, whose look-ahead adds up over the depth (N layers → N·L frames).

So frame ``t`` depends on audio up to the end of frame ``last(chunk(t)) ≤ t + L``, plus the STFT's half
window (a mel frame centred before that point reads ``mel_win_length / 2`` samples past its centre).
Per frame, the look-ahead is ``L`` frames for the first frame of a chunk and 0 for the last.

``left`` bounds how many past frames an attention layer may read, so that the receptive field is finite
and a sliding-window streamer (``pestalk_hf.streaming``) reproduces the full-clip result exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class StreamingContext:
    """Chunk geometry of one streaming forward pass.

    Attributes:
        chunk: frames per chunk (``streaming_lookahead_frames + 1``).
        offset: absolute index of the pass's first frame (a window cut from a longer stream); chunk
            boundaries stay on the absolute grid whatever the window.
        left: past frames an attention layer may read (None = all).
        hop_length / sampling_rate / fps: map 100 Hz mel frames to 30 fps frames.
    """

    chunk: int
    offset: int = 0
    left: int | None = None
    hop_length: int = 160
    sampling_rate: int = 16000
    fps: int = 30

    @classmethod
    def from_config(cls, config, offset: int = 0) -> "StreamingContext | None":
        """The context of ``config`` (None when it is not in the streaming mode)."""
        if getattr(config, "streaming_lookahead_frames", None) is None:
            return None
        return cls(
            chunk=config.streaming_lookahead_frames + 1, offset=int(offset), left=config.streaming_left_context_frames,
            hop_length=config.mel_hop_length, sampling_rate=config.sampling_rate, fps=config.fps,
        )

    def frame_chunks(self, num_frames: int, device=None) -> torch.Tensor:
        """Chunk index of each 30 fps frame of the pass: ``(T,)`` long."""
        return torch.div(torch.arange(num_frames, device=device) + self.offset, self.chunk, rounding_mode="floor")

    def mel_chunks(self, num_mel: int, device=None) -> torch.Tensor:
        """Chunk index of each mel frame (centre ``m · hop``, on the pass's first sample): ``(M,)`` long.

        The pass must start on a sample that is a multiple of the hop and of the frame grid (whole
        seconds do), so relative and absolute mel grids agree."""
        m = torch.arange(num_mel, device=device)
        frame = torch.div(m * (self.hop_length * self.fps), self.sampling_rate, rounding_mode="floor")
        return torch.div(frame + self.offset, self.chunk, rounding_mode="floor")

    def attention_allowed(self, num_frames: int, device=None) -> torch.Tensor:
        """``(T, T)`` bool: query ``i`` may attend key ``j`` (chunk rule and left context)."""
        pos = torch.arange(num_frames, device=device) + self.offset
        return self.allowed_between(pos, pos)

    def allowed_between(self, query_frames: torch.Tensor, key_frames: torch.Tensor) -> torch.Tensor:
        """``(Q, K)`` bool for absolute frame indices ``(Q,)`` and ``(K,)`` (``offset`` is not added): the key's
        chunk is not later than the query's and, with ``left``, the key is at most ``left`` frames back."""
        chunk = lambda t: torch.div(t, self.chunk, rounding_mode="floor")  # noqa: E731
        allowed = chunk(key_frames)[None, :] <= chunk(query_frames)[:, None]
        if self.left is not None:
            allowed &= key_frames[None, :] >= query_frames[:, None] - self.left
        return allowed


def attention_mask(allowed: torch.Tensor, key_valid: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask from the chunk rule and key padding.

    Args:
        allowed: ``(T, T)`` bool from :meth:`StreamingContext.attention_allowed`, or ``(Q, K)`` from
            :meth:`StreamingContext.allowed_between` whose last ``Q`` keys are the queries' own frames
            (cached streaming: past keys, then the new frames).
        key_valid: ``(B, K)`` bool (True = real frame) or None.
    Returns:
        ``(B, Q, K)`` (``(1, Q, K)`` without ``key_valid``): 0 where allowed, -inf elsewhere. Each query may
        always read itself, so a padded query whose whole window is padding gets a finite row, not NaN.
    """
    ok = allowed[None] if key_valid is None else allowed[None] & key_valid[:, None, :]
    q, k = allowed.shape
    itself = torch.zeros(q, k, dtype=torch.bool, device=allowed.device)
    itself[torch.arange(q, device=allowed.device), torch.arange(k - q, k, device=allowed.device)] = True
    ok = ok | itself[None]
    return torch.zeros(ok.shape, dtype=dtype, device=allowed.device).masked_fill(~ok, float("-inf"))


def conv_taps_allowed(chunks: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """``(T, K)`` bool: tap ``k`` of a centred conv at position ``t`` reads ``t + k - K // 2``; allowed when
    that position's chunk is not later than ``t``'s (taps past either end read zero padding anyway)."""
    half = kernel_size // 2
    t = chunks.shape[0]
    src = torch.arange(t, device=chunks.device)[:, None] + torch.arange(kernel_size, device=chunks.device)[None, :] - half
    src_chunk = chunks[src.clamp(0, t - 1)]
    return src_chunk <= chunks[:, None]


def masked_conv1d(x: torch.Tensor, conv: nn.Conv1d, taps: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` with per-position taps switched off: ``(B, C_in, T)`` → ``(B, C_out, T)``.

    ``conv`` must be a stride-1, dilation-1 conv with centred zero padding ``K // 2`` (odd K), dense or
    depthwise. Switching taps off (rather than shifting the kernel to be causal) keeps every remaining
    weight at the time offset it was trained for, so an offline model runs in the streaming mode as is.
    """
    k = conv.kernel_size[0]
    if conv.stride[0] != 1 or conv.dilation[0] != 1 or conv.padding[0] != k // 2 or k % 2 == 0:
        raise ValueError("masked_conv1d needs a stride-1, dilation-1, centred odd-kernel conv")
    windows = F.pad(x, (k // 2, k // 2)).unfold(2, k, 1)  # (B, C_in, T, K)
    windows = windows * taps.to(x.dtype)[None, None]
    if conv.groups == 1:
        out = torch.einsum("bctk,ock->bot", windows, conv.weight)
    elif conv.groups == conv.in_channels == conv.out_channels:
        out = torch.einsum("bctk,ck->bct", windows, conv.weight[:, 0])
    else:
        raise ValueError("masked_conv1d supports dense or depthwise convs")
    return out if conv.bias is None else out + conv.bias[None, :, None]


def running_mean_within_chunks(
    values: torch.Tensor, chunks: torch.Tensor, window: int, lengths: torch.Tensor | None = None,
    prior: torch.Tensor | None = None, prior_frames: int = 0, first_position: int = 0,
) -> torch.Tensor:
    """Causal running mean: position ``p`` gets the mean of the last ``window`` valid positions up to the
    last position of its chunk (its chunk may be read, later chunks not).

    Args:
        values: ``(B, S, D)``.
        chunks: ``(S,)`` non-decreasing chunk index per position.
        window: positions averaged (ending at the chunk's last valid position).
        lengths: ``(B,)`` valid positions per item (None = all).
        prior / prior_frames: a ``(D,)`` mean that fills the window while fewer than ``prior_frames``
            positions have been seen since the stream's start (weight ``prior_frames − seen``; Kaldi's
            online CMN with global statistics).
        first_position: stream position of ``values[:, 0]`` (a window cut from a longer stream), so the
            prior's weight counts from the stream's start.
    Returns:
        ``(B, S, D)`` means (fp32 sums, so long windows do not lose precision), in ``values``' dtype.
    """
    b, s, _ = values.shape
    device = values.device
    last = torch.searchsorted(chunks.contiguous(), chunks, right=True) - 1  # (S,) last position of the chunk
    valid_len = torch.full((b,), s, device=device) if lengths is None else lengths.to(device).clamp(1, s)
    upper = torch.minimum(last[None, :], valid_len[:, None] - 1)  # (B, S)
    lower = (upper - window + 1).clamp_min(0)
    csum = F.pad(values.double().cumsum(1), (0, 0, 1, 0))  # (B, S + 1, D)
    gather = lambda idx: csum.gather(1, idx[..., None].expand(-1, -1, csum.shape[-1]))  # noqa: E731
    total, count = gather(upper + 1) - gather(lower), (upper - lower + 1)[..., None].double()
    if prior is not None and prior_frames > 0:
        fill = (prior_frames - (upper + 1 + first_position)[..., None].double()).clamp_min(0)
        total, count = total + fill * prior.to(device).double(), count + fill
    return (total / count).to(values.dtype)
