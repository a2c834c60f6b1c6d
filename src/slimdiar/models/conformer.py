"""Conformer encoder of the diarization head (no positional encoding).

Each block is ``x + ½ FFN(x)`` → ``x + MHSA(x)`` → ``x + Conv(x)`` → ``x + ½ FFN(x)`` →
LayerNorm, with pre-norm sub-modules:

* FFN: LayerNorm → Linear(d→ffn) → Swish → dropout → Linear(ffn→d) → dropout
* MHSA: LayerNorm → multi-head self-attention → dropout
* Conv: LayerNorm → pointwise conv (d→2d) → GLU → depthwise conv (kernel k) → BatchNorm → Swish →
  pointwise conv (d→d) → dropout

Masks are boolean ``(batch, num_frames)`` tensors, ``True`` on valid frames. Padded frames are
never attended to and are zeroed before the depthwise convolution, so they do not leak into valid
frames; BatchNorm statistics in training mode do include the (zeroed) padded frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeedForward(nn.Module):
    """Pre-norm feed-forward module with Swish activation.

    Parameters
    ----------
    d_model
        Model width.
    ffn_dim
        Intermediate width.
    dropout
        Dropout probability.
    """

    def __init__(self, d_model: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.activation = nn.SiLU()
        self.dropout1 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, num_frames, d_model)`` → same shape (without the residual)."""
        x = self.dropout1(self.activation(self.linear1(self.norm(x))))
        return self.dropout2(self.linear2(x))


class SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention without positional encoding.

    Parameters
    ----------
    d_model
        Model width.
    num_heads
        Number of attention heads.
    dropout
        Dropout probability (on the attention weights and on the output).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.attention = nn.MultiheadAttention(
            d_model, num_heads, dropout=dropout, batch_first=True
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend over valid frames.

        Parameters
        ----------
        x
            ``(batch, num_frames, d_model)``.
        mask
            ``(batch, num_frames)``, ``True`` on valid frames, or ``None``.

        Returns
        -------
        torch.Tensor
            ``(batch, num_frames, d_model)`` (without the residual).
        """
        key_padding_mask = None
        if mask is not None:
            key_padding_mask = ~mask
            # a chunk without any valid frame would attend to nothing (NaN): let it attend to all
            key_padding_mask = key_padding_mask & mask.any(dim=1, keepdim=True)
        x = self.norm(x)
        return self.dropout(self._attend(x, key_padding_mask))

    def _attend(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        """``nn.MultiheadAttention(x, x, x, key_padding_mask, need_weights=False)``, batch first.

        The same projections, scaled dot-product attention and dropout on the attention weights,
        computed on the ``(batch, frames, d)`` layout: the module's own path transposes to
        ``(frames, batch, d)`` first, and under autocast (where its fused kernel is off) its
        input projection then becomes a batched matmul over a per-frame copy of the weight,
        a fifth of the segmentation model's time in bfloat16.
        """
        attention = self.attention
        batch, frames, d_model = x.shape
        heads = attention.num_heads
        qkv = F.linear(x, attention.in_proj_weight, attention.in_proj_bias)
        q, k, v = qkv.view(batch, frames, 3, heads, d_model // heads).permute(2, 0, 3, 1, 4)
        # (batch, heads, frames, head_dim) each
        allowed = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=attention.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(batch, frames, d_model)
        return F.linear(y, attention.out_proj.weight, attention.out_proj.bias)


class ConvModule(nn.Module):
    """Conformer convolution module.

    Parameters
    ----------
    d_model
        Model width.
    kernel_size
        Odd kernel size of the depthwise convolution.
    dropout
        Dropout probability.
    """

    def __init__(self, d_model: int, kernel_size: int, dropout: float):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"conv kernel size must be odd, got {kernel_size}")
        self.norm = nn.LayerNorm(d_model)
        self.pointwise1 = nn.Conv1d(d_model, 2 * d_model, kernel_size=1)
        self.glu = nn.GLU(dim=1)
        self.depthwise = nn.Conv1d(
            d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model
        )
        self.batch_norm = nn.BatchNorm1d(d_model)
        self.activation = nn.SiLU()
        self.pointwise2 = nn.Conv1d(d_model, d_model, kernel_size=1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Convolve along time.

        Parameters
        ----------
        x
            ``(batch, num_frames, d_model)``.
        mask
            ``(batch, num_frames)``, ``True`` on valid frames, or ``None``.

        Returns
        -------
        torch.Tensor
            ``(batch, num_frames, d_model)`` (without the residual).
        """
        x = self.norm(x).transpose(1, 2)  # (batch, d_model, num_frames)
        x = self.glu(self.pointwise1(x))
        if mask is not None:
            x = x * mask.unsqueeze(1).to(x.dtype)
        x = self.activation(self.batch_norm(self.depthwise(x)))
        x = self.dropout(self.pointwise2(x))
        return x.transpose(1, 2)


class ConformerBlock(nn.Module):
    """One Conformer block: ½ FFN → MHSA → Conv → ½ FFN → LayerNorm, each with a residual.

    Parameters
    ----------
    d_model
        Model width (256).
    num_heads
        Attention heads (4).
    ffn_dim
        FFN intermediate width (1024).
    conv_kernel
        Depthwise convolution kernel size (31).
    dropout
        Dropout probability (0.1).
    """

    def __init__(
        self,
        d_model: int = 256,
        num_heads: int = 4,
        ffn_dim: int = 1024,
        conv_kernel: int = 31,
        dropout: float = 0.1,
    ):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        self.ffn1 = FeedForward(d_model, ffn_dim, dropout)
        self.attention = SelfAttention(d_model, num_heads, dropout)
        self.conv = ConvModule(d_model, conv_kernel, dropout)
        self.ffn2 = FeedForward(d_model, ffn_dim, dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the block.

        Parameters
        ----------
        x
            ``(batch, num_frames, d_model)``.
        mask
            ``(batch, num_frames)``, ``True`` on valid frames, or ``None``.

        Returns
        -------
        torch.Tensor
            ``(batch, num_frames, d_model)``.
        """
        x = x + 0.5 * self.ffn1(x)
        x = x + self.attention(x, mask)
        x = x + self.conv(x, mask)
        x = x + 0.5 * self.ffn2(x)
        return self.norm(x)


class Conformer(nn.Module):
    """A stack of :class:`ConformerBlock`.

    Parameters
    ----------
    num_blocks
        Number of blocks (4).
    d_model, num_heads, ffn_dim, conv_kernel, dropout
        See :class:`ConformerBlock`.
    """

    def __init__(
        self,
        num_blocks: int = 4,
        d_model: int = 256,
        num_heads: int = 4,
        ffn_dim: int = 1024,
        conv_kernel: int = 31,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            ConformerBlock(d_model, num_heads, ffn_dim, conv_kernel, dropout)
            for _ in range(num_blocks)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Apply every block in turn.

        Parameters
        ----------
        x
            ``(batch, num_frames, d_model)``.
        mask
            ``(batch, num_frames)``, ``True`` on valid frames, or ``None``.

        Returns
        -------
        torch.Tensor
            ``(batch, num_frames, d_model)``.
        """
        for block in self.blocks:
            x = block(x, mask)
        return x
