"""Window-parallel sampling: one job's context windows split over ``torch.distributed`` ranks.

Every rank holds the whole model and the same latents. At each denoising step a rank runs the
denoiser on its own share of the step's windows (consecutive window groups, so the per-frame
features a rank computes stay local), accumulates their predictions into the step's
``sum`` and ``count`` buffers, and one ``all_reduce`` (SUM) adds up the ranks' buffers. Every
rank then fuses, guides and steps the scheduler on identical numbers, so all ranks keep the
same latents without sending them. A frame covered by at most two windows gets exactly the
single-process sum (``0 + a + b`` equals ``a + b``), so the output matches the single-process
run; with more windows per frame only the order of the additions changes (float rounding).

Rank 0 decides: it alone shows progress, calls ``window_callback`` (for every window of a
step, the other ranks' after the reduction), saves the resumable state and writes the output.
Each step ends with a one-number vote (:meth:`WindowParallel.agree`): when rank 0's callbacks
or saving raise, or any rank fails, every rank stops at the same step instead of waiting on
the others; rank 0 re-raises its own error, the others raise :class:`ParallelStop`.

Launch with ``torchrun --nproc-per-node N -m kinemate animate ...`` (or ``accelerate launch``):
:func:`init_from_env` reads the launcher's environment (``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``), starts the process group (gloo for CPU tensors, NCCL for CUDA ones) and gives
each rank its own GPU. In Python, pass ``parallel=WindowParallel.current()`` to the pipeline.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kinemate.errors import KinemateError, UsageError

log = logging.getLogger(__name__)


class ParallelStop(KinemateError):
    """Raised on the ranks that did not fail when another rank stopped the job."""


def launched() -> bool:
    """True under a launcher that started several processes (``WORLD_SIZE`` > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def init_from_env(device: str = "cpu", timeout_s: float = 1800.0
                  ) -> tuple["WindowParallel | None", str]:
    """Start the process group a launcher describes in the environment and return
    ``(parallel, device)``: ``(None, device)`` in a single process; for ``cuda`` each rank
    gets ``cuda:LOCAL_RANK`` (a device given with an index is refused: the launcher
    chooses)."""
    if not launched():
        return None, device
    import torch.distributed as dist

    if not dist.is_available():
        raise UsageError("this torch build has no torch.distributed; run without a launcher")
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    kind = torch.device(device).type
    if kind == "cuda":
        if torch.device(device).index is not None:
            raise UsageError(f"`device` {device} names one GPU, but a launcher runs one process "
                             "per GPU; give `device=cuda` and the launcher picks each rank's GPU")
        if local_rank >= torch.cuda.device_count():
            raise UsageError(f"rank {local_rank} has no GPU (this machine has "
                             f"{torch.cuda.device_count()}); start at most that many processes "
                             "per machine")
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    elif kind != "cpu":
        raise UsageError(f"window-parallel sampling runs on cpu or cuda, not {device}")
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if kind == "cuda" else "gloo"
        kwargs = {"device_id": torch.device(device)} if kind == "cuda" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    return WindowParallel.current(), device


def close() -> None:
    """End the process group (call once at the end of a launched program)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def share(count: int, rank: int, world_size: int) -> range:
    """The consecutive items ``[start, stop)`` of ``count`` that ``rank`` takes: the first
    ``count % world_size`` ranks take one more (e.g. 5 over 2 ranks: 0-2, 3-4)."""
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


@dataclass
class WindowParallel:
    """This process's place in a window-parallel job: ``rank`` of ``world_size`` processes in
    ``group`` (None: the default group)."""

    rank: int
    world_size: int
    group: object = None
    device: str = "cpu"  # where the small messages (votes, sizes, bytes) travel

    @classmethod
    def current(cls) -> "WindowParallel | None":
        """The default process group as a :class:`WindowParallel` (None when there is none
        or it has one process)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return None
        backend = str(dist.get_backend())
        device = "cpu" if "gloo" in backend else f"cuda:{torch.cuda.current_device()}"
        return cls(dist.get_rank(), dist.get_world_size(), device=device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def groups_of(self, rank: int, groups: list[list[int]]) -> list[list[int]]:
        """The window groups ``rank`` runs (a consecutive share)."""
        return [groups[g] for g in share(len(groups), rank, self.world_size)]

    def mine(self, groups: list[list[int]]) -> list[list[int]]:
        return self.groups_of(self.rank, groups)

    def others(self, groups: list[list[int]]) -> list[int]:
        """The window indices the other ranks run, in order."""
        own = {i for group in self.mine(groups) for i in group}
        return [i for group in groups for i in group if i not in own]

    # -- communication ------------------------------------------------------------------
    def _dist(self):
        import torch.distributed as dist

        return dist

    def sum_(self, buffer: torch.Tensor) -> None:
        """In-place sum of ``buffer`` over the ranks."""
        self._dist().all_reduce(buffer, group=self.group)

    def agree(self, work: Callable[[], object] | None) -> object:
        """Run ``work`` (None: nothing) on this rank and vote: if it raised here or on any
        other rank, every rank stops — this rank re-raises its own error, the others raise
        :class:`ParallelStop`. Returns ``work``'s result."""
        error, result = None, None
        try:
            if work is not None:
                result = work()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the vote
            error = exc
        self.vote(error)
        return result

    def vote(self, error: BaseException | None) -> None:
        """The end of :meth:`agree`: one small all-reduce of "did it fail here"."""
        flag = torch.tensor([1.0 if error is not None else 0.0], device=self.device)
        self.sum_(flag)
        self.raise_if(error, float(flag[0]))

    def raise_if(self, error: BaseException | None, failures: float) -> None:
        if error is not None:
            raise error
        if failures > 0:
            raise ParallelStop("another process of this window-parallel job stopped (its "
                               "error is reported by that process, rank 0's first); this one "
                               "stops with it")

    def broadcast_bytes(self, data: bytes | None) -> bytes | None:
        """Rank 0's ``data`` (or None) on every rank."""
        dist = self._dist()
        size = torch.tensor([-1 if data is None else len(data)], dtype=torch.int64,
                            device=self.device)
        dist.broadcast(size, 0, group=self.group)
        if int(size) < 0:
            return None
        payload = (torch.frombuffer(bytearray(data), dtype=torch.uint8) if self.is_main
                   else torch.empty(int(size), dtype=torch.uint8)).to(self.device)
        dist.broadcast(payload, 0, group=self.group)
        return payload.cpu().numpy().tobytes()

    def check_same(self, digest: str, what: str) -> None:
        """Refuse to go on unless every rank has the same ``digest`` (of its inputs)."""
        dist = self._dist()
        mine = torch.frombuffer(bytearray(bytes.fromhex(digest)), dtype=torch.uint8).to(self.device)
        gathered = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(gathered, mine, group=self.group)
        differ = [r for r, g in enumerate(gathered) if not torch.equal(g, gathered[0])]
        if differ:
            raise UsageError(f"the processes of this window-parallel job do not hold the same "
                             f"{what} (rank {', '.join(map(str, differ))} differ from rank 0); "
                             "start every process with the same command and files")


def inputs_digest(reference: np.ndarray, controls: Sequence[np.ndarray], latents: torch.Tensor,
                  facts: dict) -> str:
    """sha256 of what every rank must hold alike: the reference, the controls, the starting
    latents and ``facts`` (options, model digest)."""
    h = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode())
    for frame in (reference, *(controls[i] for i in range(len(controls)))):
        h.update(np.ascontiguousarray(frame).tobytes())
    h.update(latents.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def saved_to_bytes(saved) -> bytes | None:
    """A :class:`~kinemate.pipeline.resume.SavedStep` as safetensors bytes (no pickle)."""
    if saved is None:
        return None
    from safetensors.torch import save

    tensors = {"latents": saved.latents.contiguous(),
               **{k: v.contiguous() for k, v in saved.scheduler["tensors"].items()}}
    if saved.generator is not None:
        tensors["generator"] = saved.generator
    meta = {"step": str(saved.step), "plain": json.dumps(saved.scheduler["plain"])}
    return save(tensors, metadata=meta)


def saved_from_bytes(data: bytes | None):
    if data is None:
        return None
    from safetensors.torch import load

    from kinemate.pipeline.resume import SavedStep

    meta = json.loads(_metadata(data))
    tensors = load(data)
    return SavedStep(int(meta["step"]), tensors.pop("latents"),
                     {"plain": json.loads(meta["plain"]),
                      "tensors": {k: v for k, v in tensors.items() if k.startswith("scheduler.")}},
                     tensors.get("generator"))


def _metadata(data: bytes) -> str:
    """The ``__metadata__`` of safetensors bytes, as JSON text."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    return json.dumps(header.get("__metadata__", {}))
