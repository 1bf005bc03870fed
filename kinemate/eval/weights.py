"""Loading metric networks' weights from local files, and saying which ones were used.

Metric networks never download anything: the user gives local paths (``kinemate weights
download`` fetches the published files when asked; see docs/evaluation.md for names, sources
and hashes). Every loaded network carries a :class:`NetworkInfo` that reports print, so a
number can always be traced to the exact file (its sha256 is computed on load).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from kinemate.errors import WeightsError

__all__ = ["NetworkInfo", "sha256_file", "load_state_dict", "load_into", "init_random"]


@dataclass
class NetworkInfo:
    """What a metric network is and where its weights came from (written into every report)."""

    metric: str
    architecture: str
    files: list[dict] = field(default_factory=list)  # [{"path", "sha256", "role"}]
    pretrained: bool = True
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if not self.pretrained:
            return f"{self.architecture} with RANDOM weights ({self.note or 'plumbing test only'})"
        files = ", ".join(f"{Path(f['path']).name} (sha256 {f['sha256'][:16]}…)" for f in self.files)
        return f"{self.architecture} from {files}"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_state_dict(path: str | Path, *, what: str) -> dict[str, torch.Tensor]:
    """Read a ``.pth``/``.pt``/``.safetensors`` state dict; unwraps ``{"state_dict": ...}`` and
    strips a DataParallel ``module.`` prefix."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"{what} weights file not found: {path}; download it with 'kinemate weights download' "
            "or see docs/evaluation.md for the published file and pass its local path"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise WeightsError(
            f"cannot read {what} weights from {path} ({type(exc).__name__}: {exc}); "
            "the file may be truncated or of another format — download it again"
        ) from exc
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise WeightsError(f"{path} does not hold a state dict for {what}; check the file (docs/evaluation.md)")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items() if torch.is_tensor(v)}


def load_into(module: nn.Module, sd: dict[str, torch.Tensor], *, what: str, path: str | Path) -> None:
    """Copy every parameter/buffer of ``module`` from ``sd`` (extra keys, e.g. classifier heads,
    are ignored); missing keys or wrong shapes raise :class:`WeightsError`."""
    own = {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = [k for k in own if k not in sd]
    if missing:
        raise WeightsError(
            f"{path} is not a {what} checkpoint: {len(missing)} expected tensors are missing "
            f"(e.g. {missing[:3]}); see docs/evaluation.md for the file to use"
        )
    bad = [k for k, v in own.items() if tuple(sd[k].shape) != tuple(v.shape)]
    if bad:
        k = bad[0]
        raise WeightsError(
            f"{path} does not match the {what} architecture: {k} has shape {tuple(sd[k].shape)}, "
            f"expected {tuple(own[k].shape)}; see docs/evaluation.md for the file to use"
        )
    module.load_state_dict({k: sd[k] for k in own}, strict=False)


def init_random(module: nn.Module, seed: int = 0) -> nn.Module:
    """He-initialise convolutions/linears (signal-preserving through deep stacks) for the
    random tiny networks of plumbing tests; PyTorch's default init makes deep features vanish."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.zero_()
    return module
