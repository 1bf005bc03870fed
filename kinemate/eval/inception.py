"""InceptionV3 as used for FID (pytorch-fid's ``FIDInceptionV3``), pool3 features (2048-d).

Written here without torchvision; module names follow torchvision's ``Inception3`` so the
published pytorch-fid file ``pt_inception-2015-12-05-6726825d.pth`` (a port of the TF
``2015-12-05`` graph that the original TTUR FID code uses) loads as it is. The FID variant
differs from torchvision's network in its pooling: the average pools in blocks A, C and E_1
exclude padding from the average, and the pool branch of the last block (E_2) is a max pool.

Input: uint8 or float images; :meth:`FIDInceptionV3.features` takes float (N, 3, H, W) in
[0, 1], resizes bilinearly to 299×299 and scales to [-1, 1], then returns (N, 2048).
``width`` (< 1 only in tests) shrinks every layer; the code path is identical.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kinemate.eval.weights import NetworkInfo, init_random, load_into, load_state_dict, sha256_file

__all__ = ["FIDInceptionV3", "load_inception", "random_inception"]


class _BC(nn.Module):
    """torchvision's BasicConv2d: conv (no bias) + BatchNorm(eps=1e-3) + ReLU."""

    def __init__(self, cin, cout, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)
        self.out = cout

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg3(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _A(nn.Module):
    def __init__(self, cin, pool, c):
        super().__init__()
        self.branch1x1 = _BC(cin, c(64), 1)
        self.branch5x5_1 = _BC(cin, c(48), 1)
        self.branch5x5_2 = _BC(c(48), c(64), 5, padding=2)
        self.branch3x3dbl_1 = _BC(cin, c(64), 1)
        self.branch3x3dbl_2 = _BC(c(64), c(96), 3, padding=1)
        self.branch3x3dbl_3 = _BC(c(96), c(96), 3, padding=1)
        self.branch_pool = _BC(cin, c(pool), 1)
        self.out = c(64) + c(64) + c(96) + c(pool)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg3(x)),
        ], 1)


class _B(nn.Module):
    def __init__(self, cin, c):
        super().__init__()
        self.branch3x3 = _BC(cin, c(384), 3, stride=2)
        self.branch3x3dbl_1 = _BC(cin, c(64), 1)
        self.branch3x3dbl_2 = _BC(c(64), c(96), 3, padding=1)
        self.branch3x3dbl_3 = _BC(c(96), c(96), 3, stride=2)
        self.out = c(384) + c(96) + cin

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class _C(nn.Module):
    def __init__(self, cin, c7, c):
        super().__init__()
        c7 = c(c7)
        self.branch1x1 = _BC(cin, c(192), 1)
        self.branch7x7_1 = _BC(cin, c7, 1)
        self.branch7x7_2 = _BC(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _BC(c7, c(192), (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _BC(cin, c7, 1)
        self.branch7x7dbl_2 = _BC(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _BC(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _BC(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _BC(c7, c(192), (1, 7), padding=(0, 3))
        self.branch_pool = _BC(cin, c(192), 1)
        self.out = 4 * c(192)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for i in range(1, 6):
            bd = getattr(self, f"branch7x7dbl_{i}")(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg3(x))], 1)


class _D(nn.Module):
    def __init__(self, cin, c):
        super().__init__()
        self.branch3x3_1 = _BC(cin, c(192), 1)
        self.branch3x3_2 = _BC(c(192), c(320), 3, stride=2)
        self.branch7x7x3_1 = _BC(cin, c(192), 1)
        self.branch7x7x3_2 = _BC(c(192), c(192), (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _BC(c(192), c(192), (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _BC(c(192), c(192), 3, stride=2)
        self.out = c(320) + c(192) + cin

    def forward(self, x):
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class _E(nn.Module):
    def __init__(self, cin, c, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _BC(cin, c(320), 1)
        self.branch3x3_1 = _BC(cin, c(384), 1)
        self.branch3x3_2a = _BC(c(384), c(384), (1, 3), padding=(0, 1))
        self.branch3x3_2b = _BC(c(384), c(384), (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _BC(cin, c(448), 1)
        self.branch3x3dbl_2 = _BC(c(448), c(384), 3, padding=1)
        self.branch3x3dbl_3a = _BC(c(384), c(384), (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _BC(c(384), c(384), (3, 1), padding=(1, 0))
        self.branch_pool = _BC(cin, c(192), 1)
        self.out = c(320) + 4 * c(384) + c(192)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """The FID InceptionV3 up to pool3. ``features(x)``: float (N, 3, H, W) in [0, 1] → (N, D)."""

    def __init__(self, width: float = 1.0, resize_to: int = 299):
        super().__init__()

        def c(n):
            return max(1, int(round(n * width)))

        self.resize_to = resize_to
        self.Conv2d_1a_3x3 = _BC(3, c(32), 3, stride=2)
        self.Conv2d_2a_3x3 = _BC(c(32), c(32), 3)
        self.Conv2d_2b_3x3 = _BC(c(32), c(64), 3, padding=1)
        self.Conv2d_3b_1x1 = _BC(c(64), c(80), 1)
        self.Conv2d_4a_3x3 = _BC(c(80), c(192), 3)
        self.Mixed_5b = _A(c(192), 32, c)
        self.Mixed_5c = _A(self.Mixed_5b.out, 64, c)
        self.Mixed_5d = _A(self.Mixed_5c.out, 64, c)
        self.Mixed_6a = _B(self.Mixed_5d.out, c)
        self.Mixed_6b = _C(self.Mixed_6a.out, 128, c)
        self.Mixed_6c = _C(self.Mixed_6b.out, 160, c)
        self.Mixed_6d = _C(self.Mixed_6c.out, 160, c)
        self.Mixed_6e = _C(self.Mixed_6d.out, 192, c)
        self.Mixed_7a = _D(self.Mixed_6e.out, c)
        self.Mixed_7b = _E(self.Mixed_7a.out, c, max_pool=False)
        self.Mixed_7c = _E(self.Mixed_7b.out, c, max_pool=True)
        self.dim = self.Mixed_7c.out
        self.info = NetworkInfo("fid", "InceptionV3 (FID, pool3)", pretrained=False, note="not loaded")
        self.eval().requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    forward = features


def load_inception(path: str | Path, *, device: str | torch.device = "cpu") -> FIDInceptionV3:
    """Load ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid) into the FID InceptionV3."""
    model = FIDInceptionV3()
    load_into(model, load_state_dict(path, what="FID InceptionV3"), what="FID InceptionV3 (pytorch-fid)", path=path)
    model.info = NetworkInfo(
        "fid", "InceptionV3 (FID, pool3 2048-d)",
        files=[{"role": "weights", "path": str(path), "sha256": sha256_file(path)}],
    )
    return model.to(device)


def random_inception(*, width: float = 0.0625, resize_to: int = 75, seed: int = 0) -> FIDInceptionV3:
    """Random InceptionV3 at reduced width/resolution: plumbing tests only."""
    model = init_random(FIDInceptionV3(width=width, resize_to=resize_to), seed)
    model.info = NetworkInfo(
        "fid", f"InceptionV3 (FID), width {width}, {resize_to}px", pretrained=False, note="random, tests only"
    )
    return model
