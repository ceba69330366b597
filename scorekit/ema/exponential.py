"""Exponential moving average of a network's weights (DDPM: decay 0.9999; NCSNv2 technique 5: 0.999)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """ema <- decay * ema + (1 - decay) * param after every optimizer step (constant decay, as both
    papers' code); buffers are copied. ``module`` is a frozen copy of the network in eval mode."""

    def __init__(self, net: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(net).eval().requires_grad_(False)
        self._ema_params = list(self.module.parameters())
        self._ema_buffers = list(self.module.buffers())

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        params = [p.detach() for p in net.parameters()]
        if self.decay == 0.0:
            torch._foreach_copy_(self._ema_params, params)
        else:
            torch._foreach_lerp_(self._ema_params, params, 1.0 - self.decay)
        for b_ema, b in zip(self._ema_buffers, net.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
