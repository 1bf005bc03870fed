"""A worker's loaded models, kept within a memory budget (least recently used goes first).

A worker may serve several models (``kinemate worker --model NAME=FOLDER ...``): each job
names one (or takes the worker's default). Loading a model takes seconds to minutes, so the
loaded ones stay on the device for the next job that needs them, as long as their weights
fit in ``budget_bytes`` together; loading one more evicts the models used longest ago (the
one a job needs now is always kept, even alone above the budget).
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any, Callable

log = logging.getLogger("kinemate.service")


def model_bytes(pipe: Any) -> int:
    """Bytes of every parameter and buffer of the torch modules a pipeline holds (each
    tensor counted once)."""
    import torch

    seen, total = set(), 0
    for value in vars(pipe).values():
        if not isinstance(value, torch.nn.Module):
            continue
        for tensor in list(value.parameters()) + list(value.buffers()):
            key = (tensor.device, tensor.data_ptr())
            if key not in seen:
                seen.add(key)
                total += tensor.numel() * tensor.element_size()
    return total


class ModelCache:
    """``get(name)``: the loaded model ``name`` (``load(name)`` on a miss), LRU within
    ``budget_bytes`` (0: keep one model only)."""

    def __init__(self, load: Callable[[str], Any], budget_bytes: int,
                 size_of: Callable[[Any], int] = model_bytes,
                 on_evict: Callable[[str, Any], None] | None = None):
        self.load, self.budget, self.size_of, self.on_evict = load, budget_bytes, size_of, on_evict
        self._models: collections.OrderedDict[str, tuple[Any, int]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0
        self.evictions = 0

    def get(self, name: str) -> Any:
        with self._lock:
            if name in self._models:
                self._models.move_to_end(name)
                return self._models[name][0]
            model = self.load(name)
            size = int(self.size_of(model))
            self.loads += 1
            self._models[name] = (model, size)
            self._evict(keep=name)
            return model

    def _evict(self, keep: str) -> None:
        while self.total_bytes > self.budget and len(self._models) > 1:
            name = next(n for n in self._models if n != keep)
            model, size = self._models.pop(name)
            self.evictions += 1
            log.info("model cache: unloaded %s (%.1f MiB) to stay within %.1f MiB", name,
                     size / 2**20, self.budget / 2**20)
            if self.on_evict is not None:
                self.on_evict(name, model)
            del model
        _free_device_memory()

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self._models.values())

    def loaded(self) -> list[str]:
        """Names of the loaded models, least recently used first."""
        with self._lock:
            return list(self._models)


def _free_device_memory() -> None:
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
