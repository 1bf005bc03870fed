"""LPIPS (Zhang et al., CVPR 2018, "The Unreasonable Effectiveness of Deep Features"), v0.1.

The architecture: a frozen ImageNet backbone (AlexNet or VGG16 ``features``) tapped after five
ReLUs; each tap is unit-normalised along channels, the squared difference of the two images'
taps is weighted per channel by a learned 1×1 convolution (the "linear heads"), averaged over
space, and the five layers are summed. Inputs are scaled to [-1, 1] and then shifted/scaled by
the fixed ``ScalingLayer`` constants of the reference implementation.

The backbones are written here (no torchvision) with the layer names of torchvision's
``features`` modules, so the published torchvision files load as they are:

* backbone ``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth`` (download.pytorch.org/models);
* heads ``alex.pth`` / ``vgg.pth`` from richzhang/PerceptualSimilarity ``lpips/weights/v0.1/``
  (keys ``lin0.model.1.weight`` … ``lin4.model.1.weight``).

``width`` (< 1 only in tests) shrinks every layer, keeping the code path identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from kinemate.errors import UsageError
from kinemate.eval.weights import NetworkInfo, init_random, load_into, load_state_dict, sha256_file

__all__ = ["LPIPS", "load_lpips", "random_lpips", "lpips_frames"]

# (kind, out_channels, kernel, stride, padding) for torchvision's ``features`` Sequential.
_ALEX = [("conv", 64, 11, 4, 2), ("relu",), ("pool", 3, 2), ("conv", 192, 5, 1, 2), ("relu",), ("pool", 3, 2),
         ("conv", 384, 3, 1, 1), ("relu",), ("conv", 256, 3, 1, 1), ("relu",), ("conv", 256, 3, 1, 1), ("relu",)]
_ALEX_TAPS = [1, 4, 7, 9, 11]  # indices of relu1 .. relu5


def _vgg16_layers():
    layers = []
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]:
        layers += [("pool", 2, 2)] if v == "M" else [("conv", v, 3, 1, 1), ("relu",)]
    return layers


_VGG_TAPS = [3, 8, 15, 22, 29]  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3

_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def _ch(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


class _Backbone(nn.Module):
    """torchvision-compatible ``features`` Sequential that returns the five LPIPS taps."""

    def __init__(self, layers, taps, width: float = 1.0):
        super().__init__()
        mods, cin, chans = [], 3, []
        for spec in layers:
            if spec[0] == "conv":
                cout = _ch(spec[1], width)
                mods.append(nn.Conv2d(cin, cout, spec[2], stride=spec[3], padding=spec[4]))
                cin = cout
            elif spec[0] == "relu":
                mods.append(nn.ReLU(inplace=False))
                chans.append(cin)
            else:
                mods.append(nn.MaxPool2d(spec[1], stride=spec[2]))
        self.features = nn.Sequential(*mods)
        self.taps = list(taps)
        relu_idx = [i for i, s in enumerate(layers) if s[0] == "relu"]
        self.channels = [chans[relu_idx.index(t)] for t in self.taps]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
                if len(out) == len(self.taps):
                    break
        return out


class _Head(nn.Module):
    """One linear head; ``model.1`` is the 1×1 conv (``model.0`` the reference's dropout)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(p=0.0), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x):
        return self.model(x)


class LPIPS(nn.Module):
    """LPIPS distance. ``forward(x, y)`` takes float (N, 3, H, W) in [-1, 1], returns (N,)."""

    def __init__(self, net: str = "alex", width: float = 1.0):
        super().__init__()
        if net not in ("alex", "vgg"):
            raise UsageError(f"LPIPS backbone must be 'alex' or 'vgg', got {net!r}")
        self.net_name = net
        layers, taps = (_ALEX, _ALEX_TAPS) if net == "alex" else (_vgg16_layers(), _VGG_TAPS)
        self.net = _Backbone(layers, taps, width)
        for i, c in enumerate(self.net.channels):
            self.add_module(f"lin{i}", _Head(c))
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.info = NetworkInfo("lpips", f"LPIPS v0.1 ({net})", pretrained=False, note="not loaded")
        self.eval().requires_grad_(False)

    @staticmethod
    def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
        return f / (torch.sqrt((f * f).sum(dim=1, keepdim=True)) + eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self.net((x - self.shift) / self.scale)
        fy = self.net((y - self.shift) / self.scale)
        total = 0.0
        for i, (a, b) in enumerate(zip(fx, fy)):
            d = (self._unit(a) - self._unit(b)) ** 2
            total = total + getattr(self, f"lin{i}")(d).mean(dim=(2, 3))
        return total.flatten()


def load_lpips(
    net: str,
    backbone: str | Path,
    heads: str | Path,
    *,
    device: str | torch.device = "cpu",
) -> LPIPS:
    """Build LPIPS and load the torchvision backbone file and the v0.1 linear-head file."""
    model = LPIPS(net)
    bsd = load_state_dict(backbone, what=f"torchvision {net} backbone")
    load_into(model.net, bsd, what=f"torchvision {'alexnet' if net == 'alex' else 'vgg16'} features", path=backbone)
    hsd = load_state_dict(heads, what=f"LPIPS {net} heads")
    heads_only = nn.ModuleDict({f"lin{i}": getattr(model, f"lin{i}") for i in range(5)})
    load_into(heads_only, hsd, what=f"LPIPS v0.1 {net} linear heads", path=heads)
    model.info = NetworkInfo(
        "lpips",
        f"LPIPS v0.1 ({net})",
        files=[
            {"role": "backbone", "path": str(backbone), "sha256": sha256_file(backbone)},
            {"role": "linear heads", "path": str(heads), "sha256": sha256_file(heads)},
        ],
    )
    return model.to(device)


def random_lpips(net: str = "alex", *, width: float = 0.125, seed: int = 0) -> LPIPS:
    """LPIPS with random weights at reduced width: for plumbing tests only (values meaningless).
    The heads are made non-negative, as the trained heads are."""
    model = init_random(LPIPS(net, width=width), seed)
    for i in range(5):
        w = getattr(model, f"lin{i}").model[1].weight
        w.data.abs_()
    model.info = NetworkInfo("lpips", f"LPIPS v0.1 ({net}), width {width}", pretrained=False, note="random, tests only")
    return model


@torch.no_grad()
def lpips_frames(model: LPIPS, a: np.ndarray, b: np.ndarray, *, batch: int = 8) -> np.ndarray:
    """LPIPS per frame for uint8 stacks ``(F, H, W, 3)`` → float64 (F,)."""
    from kinemate.eval.metrics import _pair

    a, b, _ = _pair(a, b)
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(a), batch):
        x = torch.from_numpy(a[i : i + batch]).to(dev).permute(0, 3, 1, 2).float() / 127.5 - 1
        y = torch.from_numpy(b[i : i + batch]).to(dev).permute(0, 3, 1, 2).float() / 127.5 - 1
        out.append(model(x, y).double().cpu().numpy())
    return np.concatenate(out)
