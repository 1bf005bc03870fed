"""Exponential moving average of the trained parameters.

Only parameters that are trained (``requires_grad``) are averaged; the shadow copies are fp32
and live on the parameters' device. The object has ``state_dict``/``load_state_dict`` so that
``accelerate`` checkpoints it together with the model and the optimizer.
"""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """EMA of the trainable parameters of ``module`` (keys are parameter names)."""

    def __init__(self, module: nn.Module, decay: float = 0.999, warmup: bool = True):
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().float().clone()
            for name, p in module.named_parameters()
            if p.requires_grad
        }
        self._pairs = None  # (module, shadow dict, shadows, params), built by the first update

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        d = self.current_decay()
        if (self._pairs is None or self._pairs[0] is not module
                or self._pairs[1] is not self.shadow):
            # walking a large module tree costs more than the update itself: pair the shadow
            # copies with their parameters once per module (and again if ``shadow`` is
            # replaced, e.g. moved to another device)
            pairs = [(self.shadow[name], p) for name, p in module.named_parameters()
                     if name in self.shadow]
            self._pairs = (module, self.shadow, [s for s, _ in pairs], [p for _, p in pairs])
        _, _, shadows, params = self._pairs
        if shadows:
            values = [p.detach().float() for p in params]
            # shadow += (1 - d) * (value - shadow), for all tensors in one call
            torch._foreach_lerp_(shadows, values, 1.0 - d)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Write the averaged values into ``module``'s parameters (in place)."""
        for name, p in module.named_parameters():
            s = self.shadow.get(name)
            if s is not None:
                p.data.copy_(s.to(device=p.device, dtype=p.dtype))

    def state_dict(self) -> dict:
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "shadow": {k: v.cpu() for k, v in self.shadow.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self.num_updates = int(state["num_updates"])
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} parameters, e.g. {sorted(missing)[:3]}")
        for k in self.shadow:
            self.shadow[k] = state["shadow"][k].to(self.shadow[k].device).float().clone()
        self._pairs = None
