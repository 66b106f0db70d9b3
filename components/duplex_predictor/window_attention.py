"""One pre-norm causal Transformer layer whose attention sees a bounded left window of frames.

Frame ``i`` attends to frames ``i - window + 1 .. i``. Order comes from a learned bias per head and
distance (0 .. window - 1) added to the attention scores: it depends only on how far back a key is, so a
stream needs no absolute position counter and its state stays bounded over any session length. The bias
starts as ALiBi's (a per-head slope times the distance: a recency prior that a turn-taking rule needs); on
the synthetic rule of the tests (constant AdamW 3e-3) it reached 99 % validation accuracy in 150 steps,
where a zero start was at 98 % after 300.

``forward`` runs a whole padded sequence (memory grows with T^2; long sessions stream). ``step`` runs one
chunk against a cache of the last ``window - 1`` keys/values per row and gives the same outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def alibi_bias(num_heads: int, window: int) -> Tensor:
    """[heads, window]: ``-slope_h * distance`` with ALiBi's geometric slopes 2^(-8 (h + 1) / heads)."""
    slopes = 2.0 ** (-8.0 * torch.arange(1, num_heads + 1) / num_heads)
    return -slopes[:, None] * torch.arange(window)[None, :]


class WindowedCausalLayer(nn.Module):
    def __init__(self, width: int, num_heads: int, ffn_dim: int, window: int, dropout: float) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"model width {width} must be a multiple of num_heads {num_heads}")
        if window < 1:
            raise ValueError(f"max_context_frames must be at least 1 (the current frame), got {window}")
        self.num_heads, self.head_dim, self.window, self.dropout = (
            num_heads,
            width // num_heads,
            window,
            dropout,
        )
        self.attn_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.distance_bias = nn.Parameter(alibi_bias(num_heads, window))
        self.ffn_norm = nn.LayerNorm(width)
        self.ffn = nn.Sequential(
            nn.Linear(width, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, width)
        )
        self.residual_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``x`` [B, T, width], ``lengths`` [B] -> [B, T, width]."""
        q, k, v = self._project(x)
        index = torch.arange(x.shape[1], device=x.device)
        key_valid = index[None, :] < lengths.to(x.device)[:, None]
        return self._finish(x, self._attend(q, k, v, index, index, key_valid))

    def step(self, x: Tensor, lengths: Tensor, cache: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, tuple]:
        """One chunk ``x`` [B, n, width] (``lengths`` valid frames per row) after the rows' cached frames.

        ``cache``: keys, values [B, H, window - 1, head_dim] right-aligned, and ``filled`` [B] valid slots.
        Returns the outputs and the new cache (the last ``window - 1`` valid frames of each row).
        """
        keys, values, filled = cache
        lengths = lengths.to(x.device)
        q, k, v = self._project(x)
        slots, n = keys.shape[2], x.shape[1]
        keys, values = torch.cat([keys, k], dim=2), torch.cat([values, v], dim=2)
        # one index line per row: cached slots 0 .. slots - 1, then the chunk's frames
        index = torch.arange(slots + n, device=x.device)
        cached = (index[None, :] < slots) & (index[None, :] >= slots - filled[:, None])
        fresh = (index[None, :] >= slots) & (index[None, :] < slots + lengths[:, None])
        y = self._attend(q, keys, values, index[slots:], index, cached | fresh)
        keep = (lengths[:, None] + torch.arange(slots, device=x.device)[None, :])[:, None, :, None]
        keep = keep.expand(-1, self.num_heads, -1, self.head_dim)
        new_cache = (keys.gather(2, keep), values.gather(2, keep), (filled + lengths).clamp(max=slots))
        return self._finish(x, y), new_cache

    def empty_cache(self, batch_size: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        shape = (batch_size, self.num_heads, self.window - 1, self.head_dim)
        filled = torch.zeros(batch_size, dtype=torch.long, device=like.device)
        return like.new_zeros(shape), like.new_zeros(shape), filled

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = self.qkv(self.attn_norm(x)).chunk(3, dim=-1)
        return tuple(t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2) for t in (q, k, v))

    def _attend(
        self, q: Tensor, k: Tensor, v: Tensor, query_index: Tensor, key_index: Tensor, key_valid: Tensor
    ) -> Tensor:
        """Attention of queries at ``query_index`` over keys at ``key_index`` (one index line per row).

        A query sees the valid keys 0 .. window - 1 frames back, and always itself (so a padded frame gets
        a finite, unused output instead of NaN).
        """
        distance = query_index[:, None] - key_index[None, :]
        in_window = (distance >= 0) & (distance < self.window)
        allowed = (in_window[None] & key_valid[:, None, :]) | (distance == 0)[None]
        bias = self.distance_bias[:, distance.clamp(0, self.window - 1)].to(q.dtype)  # [H, Tq, Tk]
        mask = bias[None].masked_fill(~allowed[:, None], float("-inf"))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return y.transpose(1, 2).flatten(2)

    def _finish(self, x: Tensor, attended: Tensor) -> Tensor:
        x = x + self.residual_dropout(self.out(attended))
        return x + self.residual_dropout(self.ffn(self.ffn_norm(x)))
