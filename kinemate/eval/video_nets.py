"""Video feature networks for FVD and FID-VID, loaded from local files.

* **FVD** — the I3D (Inception-v1 inflated, Kinetics-400) of the original FVD
  (Unterthiner et al. 2018), in the TorchScript port used by StyleGAN-V and
  universome/fvd-comparison: ``i3d_torchscript.pt``. It is called as
  ``detector(x, rescale=False, resize=False, return_features=True)`` on float
  ``(B, 3, T, 224, 224)`` in [-1, 1] and returns the 400-d pre-softmax logits, which is what the
  TF reference computes its statistics on. Loaded with ``torch.jit.load`` (no Python code of the
  network is needed).
* **FID-VID** — the Fréchet distance of clip features from a 3D ResNet-50 trained on Kinetics
  (Hara et al., CVPR 2018, 3D-ResNets-PyTorch, ``resnet-50-kinetics.pth``, shortcut type B),
  as in DisCo's and MagicAnimate's FID-VID. The network is written here (:class:`ResNet3D`)
  with the original module names; input ``(B, 3, T, 112, 112)`` on the 0..255 scale minus the
  per-channel mean (114.7748, 107.7354, 99.4750); features: global average pool, 2048-d.

Clips are uint8 ``(F, H, W, 3)`` per video; :class:`VideoFeatures` resizes (shorter side, then
centre crop) to the network's size and returns one feature row per clip.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from kinemate.errors import WeightsError
from kinemate.eval.weights import NetworkInfo, init_random, load_into, load_state_dict, sha256_file

__all__ = ["ResNet3D", "VideoFeatures", "load_i3d_torchscript", "load_resnet3d", "random_resnet3d", "TinyI3D"]

KINETICS_MEAN = (114.7748, 107.7354, 99.4750)


class _Bottleneck3D(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ResNet3D(nn.Module):
    """3D ResNet-50 (Hara et al.), shortcut B. ``features(x)``: (B, 3, T, H, W) normalised → (B, D)."""

    def __init__(self, layers=(3, 4, 6, 3), width: float = 1.0):
        super().__init__()

        def c(n):
            return max(1, int(round(n * width)))

        self.conv1 = nn.Conv3d(3, c(64), 7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(c(64))
        cin = c(64)
        for i, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512))):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                down = None
                if j == 0 and (stride != 1 or cin != c(planes) * 4):
                    down = nn.Sequential(
                        nn.Conv3d(cin, c(planes) * 4, 1, stride=stride, bias=False), nn.BatchNorm3d(c(planes) * 4)
                    )
                blocks.append(_Bottleneck3D(cin, c(planes), stride, down))
                cin = c(planes) * 4
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.dim = cin
        self.eval().requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool3d(x, 3, stride=2, padding=1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.adaptive_avg_pool3d(x, 1).flatten(1)

    forward = features


class TinyI3D(nn.Module):
    """A tiny scriptable network with the I3D TorchScript calling convention (tests only)."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.conv = nn.Conv3d(3, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, dim)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        y = F.adaptive_avg_pool3d(torch.tanh(self.conv(x)), 1).flatten(1)
        y = self.fc(y)
        if return_features:
            return y
        return torch.softmax(y, dim=1)


def _resize_clip(clip: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) → float (3, T, size, size) on 0..255: shorter side to ``size``, centre crop."""
    x = rearrange(torch.from_numpy(clip).float(), "t h w c -> t c h w")
    h, w = x.shape[-2:]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[:, :, top : top + size, left : left + size]
    return rearrange(x, "t c h w -> c t h w")


class VideoFeatures:
    """A video network plus its input convention; ``__call__(clips)`` → (N, D) float64 numpy."""

    def __init__(self, net, *, kind: str, size: int, info: NetworkInfo, device="cpu"):
        if kind not in ("i3d", "resnet3d"):
            raise ValueError(kind)
        self.net, self.kind, self.size, self.info, self.device = net, kind, size, info, torch.device(device)

    @torch.no_grad()
    def __call__(self, clips: list[np.ndarray], batch: int = 4) -> np.ndarray:
        out = []
        for i in range(0, len(clips), batch):
            x = torch.stack([_resize_clip(c, self.size) for c in clips[i : i + batch]]).to(self.device)
            if self.kind == "i3d":
                x = x / 127.5 - 1.0
                y = self.net(x, rescale=False, resize=False, return_features=True)
            else:
                x = x - torch.tensor(KINETICS_MEAN, device=self.device).view(1, 3, 1, 1, 1)
                y = self.net(x)
            out.append(y.double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))


def load_i3d_torchscript(path: str | Path, *, device="cpu", size: int = 224) -> VideoFeatures:
    """Load ``i3d_torchscript.pt`` (the FVD I3D) from a local file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"I3D file not found: {path}; download i3d_torchscript.pt (see docs/evaluation.md) "
            "and pass its local path"
        )
    try:
        with warnings.catch_warnings():  # the published file is TorchScript; jit.load warns it is deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(str(path), map_location=device).eval()
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(
            f"{path} is not a TorchScript I3D ({type(exc).__name__}: {exc}); use i3d_torchscript.pt "
            "(docs/evaluation.md)"
        ) from exc
    info = NetworkInfo("fvd", "I3D Kinetics-400 (TorchScript, FVD logits)",
                       files=[{"role": "weights", "path": str(path), "sha256": sha256_file(path)}])
    return VideoFeatures(net, kind="i3d", size=size, info=info, device=device)


def load_resnet3d(path: str | Path, *, device="cpu", size: int = 112) -> VideoFeatures:
    """Load ``resnet-50-kinetics.pth`` (Hara et al.) for FID-VID."""
    net = ResNet3D()
    load_into(net, load_state_dict(path, what="3D ResNet-50"), what="3D ResNet-50 Kinetics (Hara et al.)", path=path)
    info = NetworkInfo("fid_vid", "3D ResNet-50 Kinetics (pool, 2048-d)",
                       files=[{"role": "weights", "path": str(path), "sha256": sha256_file(path)}])
    return VideoFeatures(net.to(device), kind="resnet3d", size=size, info=info, device=device)


def random_resnet3d(*, width: float = 0.0625, layers=(1, 1, 1, 1), size: int = 32, seed: int = 0) -> VideoFeatures:
    net = init_random(ResNet3D(layers=layers, width=width), seed)
    info = NetworkInfo("fid_vid", f"3D ResNet (width {width}, layers {list(layers)}, {size}px)",
                       pretrained=False, note="random, tests only")
    return VideoFeatures(net, kind="resnet3d", size=size, info=info)
