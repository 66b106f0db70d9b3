"""Conditional flow matching around CosyVoice2's estimator: Euler sampling with classifier-free guidance
(inference) and the flow-matching regression loss (training), as the reference's ``CausalConditionalCFM``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from minmo_lightning.components.token2wav.decoder import CausalConditionalDecoder
from minmo_lightning.components.token2wav.flow_cache import StreamCache
from torch import Tensor, nn


@dataclass
class CFMDraws:
    """The random numbers of one flow-matching loss: time ``t`` [B], noise ``z`` [B, 80, T], CFG keep mask [B]."""

    t: Tensor
    z: Tensor
    keep_condition: Tensor


class ConditionalCFM(nn.Module):
    """Euler sampling with classifier-free guidance, and the flow-matching loss, around the estimator."""

    def __init__(
        self,
        estimator: dict[str, Any],
        mel_dim: int,
        n_timesteps: int,
        inference_cfg_rate: float,
        training_cfg_rate: float,
        sigma_min: float,
        noise_frames: int,
        temperature: float = 1.0,
    ) -> None:
        """``temperature`` scales the starting noise of sampling (1.0: the reference)."""
        super().__init__()
        self.estimator = CausalConditionalDecoder(in_channels=4 * mel_dim, out_channels=mel_dim, **estimator)
        self.mel_dim, self.n_timesteps, self.noise_frames = mel_dim, n_timesteps, noise_frames
        self.inference_cfg_rate, self.training_cfg_rate, self.sigma_min = (
            inference_cfg_rate,
            training_cfg_rate,
            sigma_min,
        )
        self.temperature = temperature
        self._noise: Tensor | None = None

    def noise(self, start: Tensor, length: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """``[B, mel, length]`` of the fixed noise from frame ``start[b]`` on (the reference's ``rand_noise``),
        times ``temperature``.

        The reference draws ``randn([1, 80, 15000])`` after seeding 0 and uses frames ``0..T-1`` of it for a
        T-frame utterance, so the same frame always gets the same noise; past the end it wraps around.
        """
        if self._noise is None:
            generator = torch.Generator().manual_seed(0)
            self._noise = torch.randn([self.mel_dim, self.noise_frames], generator=generator)
        if self._noise.device != device:
            self._noise = self._noise.to(device)
        frames = (
            start.to(device)[:, None] + torch.arange(length, device=device)[None, :]
        ) % self.noise_frames
        return (self._noise[:, frames].permute(1, 0, 2) * self.temperature).to(dtype)

    def time_steps(self) -> list[tuple[Tensor, Tensor]]:
        """(t, dt) per Euler step on the cosine schedule, accumulated in float32 exactly like the reference."""
        span = torch.linspace(0, 1, self.n_timesteps + 1)
        span = 1 - torch.cos(span * 0.5 * torch.pi)
        steps, t, dt = [], span[0], span[1] - span[0]
        for step in range(1, self.n_timesteps + 1):
            steps.append((t, dt))
            t = t + dt
            if step < self.n_timesteps:
                dt = span[step + 1] - t
        return steps

    def sample(
        self,
        z: Tensor,
        mask: Tensor,
        mu: Tensor,
        spks: Tensor,
        cond: Tensor,
        attn_mask: Tensor,
        caches: list[StreamCache] | None = None,
    ) -> Tensor:
        """Integrate from noise ``z`` [B, mel, T]; conditioned and unconditioned rows run as one batch."""
        x = z
        zeros = torch.zeros_like
        mask_in, attn_in = torch.cat([mask, mask]), torch.cat([attn_mask, attn_mask])
        mu_in, spks_in, cond_in = (
            torch.cat([mu, zeros(mu)]),
            torch.cat([spks, zeros(spks)]),
            torch.cat([cond, zeros(cond)]),
        )
        beta = self.inference_cfg_rate
        for index, (t, dt) in enumerate(self.time_steps()):
            t_in = t.to(x).expand(2 * x.shape[0])
            cache = caches[index] if caches is not None else None
            v = self.estimator(torch.cat([x, x]), mask_in, mu_in, t_in, spks_in, cond_in, attn_in, cache)
            v_cond, v_uncond = v.chunk(2)
            x = x + dt.to(x) * ((1.0 + beta) * v_cond - beta * v_uncond)
        return x

    def loss(
        self,
        x1: Tensor,
        mask: Tensor,
        mu: Tensor,
        spks: Tensor,
        cond: Tensor,
        attn_mask: Tensor,
        draws: CFMDraws,
    ) -> dict[str, Tensor]:
        """Conditional flow matching: regress u = x1 - (1 - sigma_min) z at y_t; MSE over valid frames."""
        t = draws.t.view(-1, 1, 1).to(x1)
        y = (1 - (1 - self.sigma_min) * t) * draws.z + t * x1
        u = x1 - (1 - self.sigma_min) * draws.z
        keep = draws.keep_condition.to(x1)
        mu, spks, cond = mu * keep.view(-1, 1, 1), spks * keep.view(-1, 1), cond * keep.view(-1, 1, 1)
        pred = self.estimator(y, mask, mu, t.view(-1), spks, cond, attn_mask)
        loss = F.mse_loss(pred * mask, u * mask, reduction="sum") / (mask.sum() * u.shape[1])
        return {"loss": loss, "x": y, "mu": mu, "spks": spks, "cond": cond, "t": t.view(-1), "pred": pred}

    def draw(self, x1: Tensor) -> CFMDraws:
        batch = x1.shape[0]
        return CFMDraws(
            t=torch.rand(batch, device=x1.device, dtype=x1.dtype),
            z=torch.randn_like(x1),
            keep_condition=torch.rand(batch, device=x1.device) > self.training_cfg_rate,
        )
