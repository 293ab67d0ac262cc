"""Kolmogorov–Arnold Network layer (B-spline, "efficient-KAN" formulation) and the KAN-Conformer block.

Hub remote code: torch only.

A KAN layer replaces ``y = W·σ(x)`` by a sum of learned univariate functions,
``y_j = Σ_i [ w_base[j,i]·SiLU(x_i) + Σ_g w_spline[j,i,g]·B_g(x_i) ]``, where ``B_g`` are the
B-spline bases of order ``k`` on a uniform grid of ``grid_size`` intervals over ``grid_range``
(extended by ``k`` knots on each side so the bases form a partition of unity inside the range).
Writing it as two matmuls (base path + flattened spline bases) keeps it as fast as an MLP of the
same width up to a factor of (grid_size + k + 1).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .lookahead import StreamingContext, attention_mask, conv_taps_allowed, masked_conv1d


class KANLinear(nn.Module):
    """B-spline KAN layer mapping ``(..., in_features)`` → ``(..., out_features)``.

    Args:
        in_features / out_features: widths.
        grid_size: number of grid intervals over ``grid_range``.
        spline_order: B-spline order k (3 = cubic).
        grid_range: interval on which the spline is resolved; inputs outside it only see the base
            path and the tails of the outer bases (normalise inputs, e.g. LayerNorm, beforehand).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.grid_size = grid_size
        self.spline_order = spline_order
        h = (grid_range[1] - grid_range[0]) / grid_size
        knots = torch.arange(-spline_order, grid_size + spline_order + 1, dtype=torch.float32) * h + grid_range[0]
        # (in_features, grid_size + 2k + 1); a buffer so it follows .to(device) and is saved.
        self.register_buffer("grid", knots.expand(in_features, -1).contiguous())
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features, grid_size + spline_order))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5))
        # Small splines at start: the layer begins close to a SiLU MLP and learns its curvature.
        nn.init.normal_(self.spline_weight, std=0.1 / math.sqrt(self.in_features))

    def b_splines(self, x: torch.Tensor) -> torch.Tensor:
        """B-spline bases of ``x``.

        Args:
            x: ``(N, in_features)``.
        Returns:
            ``(N, in_features, grid_size + spline_order)`` basis values (Cox–de Boor recursion).
        """
        grid = self.grid.to(x.dtype)
        x = x.unsqueeze(-1)
        bases = ((x >= grid[:, :-1]) & (x < grid[:, 1:])).to(x.dtype)
        for k in range(1, self.spline_order + 1):
            left = (x - grid[:, : -(k + 1)]) / (grid[:, k:-1] - grid[:, : -(k + 1)]) * bases[:, :, :-1]
            right = (grid[:, k + 1 :] - x) / (grid[:, k + 1 :] - grid[:, 1:(-k)]) * bases[:, :, 1:]
            bases = left + right
        return bases

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_features)`` → ``(..., out_features)``."""
        shape = x.shape
        x = x.reshape(-1, self.in_features)
        base = F.linear(F.silu(x), self.base_weight)
        spline = F.linear(
            self.b_splines(x).reshape(x.shape[0], -1),
            self.spline_weight.reshape(self.out_features, -1),
        )
        return (base + spline).reshape(*shape[:-1], self.out_features)


class KANFeedForward(nn.Module):
    """Conformer feed-forward module with its two linear layers replaced by KAN layers.

    LayerNorm first keeps inputs inside the spline grid range; a tanh squashes the hidden
    activations back into it before the second KAN layer.
    """

    def __init__(self, d_model: int, expansion: int, grid_size: int, spline_order: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.kan1 = KANLinear(d_model, d_model * expansion, grid_size, spline_order)
        self.kan2 = KANLinear(d_model * expansion, d_model, grid_size, spline_order)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, d)`` → ``(B, T, d)``."""
        return self.dropout(self.kan2(torch.tanh(self.kan1(self.norm(x)))))


class FeedForward(nn.Module):
    """The standard Conformer feed-forward module (LayerNorm → Linear → SiLU → Linear): the MLP that
    :class:`KANFeedForward` replaces, for streams the paper does not make KAN (the content stream)."""

    def __init__(self, d_model: int, expansion: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_model * expansion)
        self.linear2 = nn.Linear(d_model * expansion, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, d)`` → ``(B, T, d)``."""
        return self.dropout(self.linear2(self.dropout(F.silu(self.linear1(self.norm(x))))))


class ConformerConvModule(nn.Module):
    """Pointwise conv → GLU → depthwise conv → LayerNorm → SiLU → pointwise conv.

    LayerNorm instead of the original BatchNorm: statistics must not depend on batch padding or
    on how long audio is chunked at inference.
    """

    def __init__(self, d_model: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Conv1d(d_model, 2 * d_model, 1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        self.depthwise_norm = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Conv1d(d_model, d_model, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, frame_mask: torch.Tensor | None = None, stream: StreamingContext | None = None
    ) -> torch.Tensor:
        """``(B, T, d)`` with ``frame_mask`` ``(B, T)`` (True = valid) → ``(B, T, d)``. With ``stream`` the
        depthwise conv's taps that would read a later chunk are off (bounded look-ahead)."""
        h = self.gated(x, frame_mask)
        if stream is None:
            h = self.depthwise(h)
        else:
            taps = conv_taps_allowed(stream.frame_chunks(h.shape[-1], h.device), self.depthwise.kernel_size[0])
            h = masked_conv1d(h, self.depthwise, taps)
        return self.output(h)

    def gated(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The depthwise conv's input: LayerNorm → pointwise conv → GLU, ``(B, T, d)`` → ``(B, d, T)``."""
        h = self.norm(x)
        if frame_mask is not None:
            h = h.masked_fill(~frame_mask.unsqueeze(-1), 0.0)  # padding must not leak into valid frames
        return F.glu(self.pointwise_in(h.transpose(1, 2)), dim=1)

    def output(self, h: torch.Tensor) -> torch.Tensor:
        """After the depthwise conv: LayerNorm → SiLU → pointwise conv, ``(B, d, T)`` → ``(B, T, d)``."""
        h = F.silu(self.depthwise_norm(h.transpose(1, 2)))
        return self.dropout(self.pointwise_out(h.transpose(1, 2)).transpose(1, 2))


class KANConformerBlock(nn.Module):
    """Conformer block (½FFN, MHSA, conv module, ½FFN, LayerNorm) with KAN feed-forward modules
    (``kan=False``: the standard MLP feed-forward modules of the original Conformer, ×4 expansion)."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        kernel_size: int,
        kan_expansion: int,
        grid_size: int,
        spline_order: int,
        dropout: float,
        kan: bool = True,
    ) -> None:
        super().__init__()

        def ffn() -> nn.Module:
            if kan:
                return KANFeedForward(d_model, kan_expansion, grid_size, spline_order, dropout)
            return FeedForward(d_model, 4, dropout)

        self.ffn1 = ffn()
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.attn_dropout = nn.Dropout(dropout)
        self.conv = ConformerConvModule(d_model, kernel_size, dropout)
        self.ffn2 = ffn()
        self.final_norm = nn.LayerNorm(d_model)

    def forward(
        self, x: torch.Tensor, frame_mask: torch.Tensor | None = None, stream: StreamingContext | None = None
    ) -> torch.Tensor:
        """``(B, T, d)``, ``frame_mask`` ``(B, T)`` bool (True = valid) → ``(B, T, d)``. ``stream``: the
        bounded-look-ahead masks (chunk rule, left context) on the attention and the conv module."""
        x = x + 0.5 * self.ffn1(x)
        h = self.attn_norm(x)
        if stream is None:
            key_padding_mask = None if frame_mask is None else ~frame_mask
            h, _ = self.attn(h, h, h, key_padding_mask=key_padding_mask, need_weights=False)
        else:
            mask = attention_mask(stream.attention_allowed(h.shape[1], h.device), frame_mask, h.dtype)
            mask = mask.expand(h.shape[0], -1, -1).repeat_interleave(self.attn.num_heads, dim=0)
            h, _ = self.attn(h, h, h, attn_mask=mask, need_weights=False)
        x = x + self.attn_dropout(h)
        x = x + self.conv(x, frame_mask, stream)
        x = x + 0.5 * self.ffn2(x)
        return self.final_norm(x)


# ---------------------------------------------------------------------------------------------------------
# incremental (cached) inference of the streaming mode
# ---------------------------------------------------------------------------------------------------------


class ConformerBlockCache:
    """What one :class:`KANConformerBlock` keeps between chunks of a stream (batch size 1).

    In the streaming mode a frame's block output depends only on frames of its own chunk or earlier ones, at
    most ``left`` frames back in the attention and ``kernel // 2`` frames back in the depthwise conv. So once
    a chunk is complete its intermediate values are final and the next chunk needs only: the attention
    inputs (after ``attn_norm``) of the last ``left`` frames, and the depthwise conv's inputs (after the GLU)
    of the last ``kernel // 2`` frames. Holding those, a new chunk costs the block's work on its own frames
    instead of on the whole receptive field (issue 13: the conformer stacks were most of a chunk's compute).

    Attributes:
        keys: ``(1, H, d)`` attention inputs of the ``H ≤ left`` frames before :attr:`next_frame`.
        conv: ``(1, d, K')`` depthwise-conv inputs of the ``K' ≤ kernel // 2`` frames before it.
        next_frame: absolute index of the first frame not yet seen.
    """

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None
        self.conv: torch.Tensor | None = None
        self.next_frame = 0


def _conv_module_step(module: ConformerConvModule, x: torch.Tensor, cache: ConformerBlockCache,
                      stream: StreamingContext) -> torch.Tensor:
    """:class:`ConformerConvModule` on the new frames ``x`` ``(1, n, d)`` of a stream (from ``cache.next_frame``),
    the depthwise conv reading the cached inputs of the frames before them. Updates ``cache.conv``."""
    half = module.depthwise.kernel_size[0] // 2
    g = module.gated(x)  # (1, d, n)
    past = cache.conv if cache.conv is not None else g[:, :, :0]
    # before the stream's first frame: zeros, the offline conv's padding (masked_conv1d pads after the newest)
    h = torch.cat([g.new_zeros(*g.shape[:2], half - past.shape[-1]), past, g], -1)
    frames = torch.arange(h.shape[-1], device=x.device) + cache.next_frame - half
    taps = conv_taps_allowed(torch.div(frames, stream.chunk, rounding_mode="floor"), 2 * half + 1)
    h = masked_conv1d(h, module.depthwise, taps)[:, :, half:]  # the new frames' outputs
    cache.conv = torch.cat([past, g], -1)[:, :, -half:] if half else None
    return module.output(h)


def conformer_block_step(block: KANConformerBlock, x: torch.Tensor, cache: ConformerBlockCache,
                         stream: StreamingContext) -> torch.Tensor:
    """:meth:`KANConformerBlock.forward` in the streaming mode for the next ``n`` frames of a stream only.

    ``x`` ``(1, n, d)``: the block's inputs for frames ``[cache.next_frame, cache.next_frame + n)`` (absolute),
    whole chunks except at the end of the stream; ``stream``: the mode's geometry (``offset`` is ignored: the
    frames' absolute indices come from the cache). Returns the outputs ``(1, n, d)``, equal to those of the
    block run on the whole stream (same masks), and advances the cache. Needs a bounded ``stream.left``."""
    if stream.left is None:
        raise ValueError("cached streaming needs a bounded left context (streaming_left_context_frames)")
    if x.shape[0] != 1:
        raise ValueError(f"cached streaming runs one stream at a time, got batch {x.shape[0]}")
    n, first = x.shape[1], cache.next_frame
    device = x.device
    x = x + 0.5 * block.ffn1(x)
    q = block.attn_norm(x)
    past = cache.keys if cache.keys is not None else q[:, :0]
    keys = torch.cat([past, q], 1)
    key_pos = torch.arange(first - past.shape[1], first + n, device=device)
    query_pos = key_pos[past.shape[1]:]
    mask = attention_mask(stream.allowed_between(query_pos, key_pos), None, q.dtype)[0]
    h, _ = block.attn(q, keys, keys, attn_mask=mask, need_weights=False)
    x = x + block.attn_dropout(h)
    x = x + _conv_module_step(block.conv, x, cache, stream)
    x = x + 0.5 * block.ffn2(x)
    cache.keys = keys[:, -stream.left:] if stream.left else None
    cache.next_frame = first + n
    return block.final_norm(x)
