"""The published files of the metric networks, and assembling the networks an evaluation uses.

Nothing here downloads: :data:`WEIGHT_FILES` lists each file's name, source URL and what is
known of its hash (``kinemate weights download`` uses this list when a user asks), and
:func:`networks_from_dir` loads whichever of them a local folder holds. A metric whose file is
absent is reported as "not available" (with the file name it needs), never silently skipped.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from kinemate.errors import UsageError

__all__ = ["WEIGHT_FILES", "Networks", "networks_from_dir", "random_networks", "check_filename_hash",
           "load_embedding"]

log = logging.getLogger(__name__)

# sha256_prefix: the 8 hex digits torch.hub-style file names carry (the first 8 of the sha256;
# torch.hub.load_state_dict_from_url(check_hash=True) verifies exactly this). No full hashes are
# listed because none were verified here; reports record the full sha256 of the file used.
WEIGHT_FILES: dict[str, dict] = {
    "lpips-alex-backbone": {
        "filename": "alexnet-owt-7be5be79.pth",
        "url": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        "sha256_prefix": "7be5be79",
        "metric": "lpips (alex)",
        "source": "torchvision ImageNet AlexNet (BSD-3-Clause)",
    },
    "lpips-alex-heads": {
        "filename": "alex.pth",
        "url": "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",
        "sha256_prefix": None,
        "metric": "lpips (alex)",
        "source": "richzhang/PerceptualSimilarity lpips/weights/v0.1 (BSD-2-Clause)",
    },
    "lpips-vgg-backbone": {
        "filename": "vgg16-397923af.pth",
        "url": "https://download.pytorch.org/models/vgg16-397923af.pth",
        "sha256_prefix": "397923af",
        "metric": "lpips (vgg)",
        "source": "torchvision ImageNet VGG16 (BSD-3-Clause)",
    },
    "lpips-vgg-heads": {
        "filename": "vgg.pth",
        "url": "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",
        "sha256_prefix": None,
        "metric": "lpips (vgg)",
        "source": "richzhang/PerceptualSimilarity lpips/weights/v0.1 (BSD-2-Clause)",
    },
    "fid-inception": {
        "filename": "pt_inception-2015-12-05-6726825d.pth",
        "url": "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
        "sha256_prefix": "6726825d",
        "metric": "fid",
        "source": "mseitzer/pytorch-fid (port of the TF 2015-12-05 Inception graph used by TTUR FID; Apache-2.0)",
    },
    "fvd-i3d": {
        "filename": "i3d_torchscript.pt",
        "url": "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
        "sha256_prefix": None,
        "metric": "fvd",
        "source": "StyleGAN-V / universome/fvd-comparison TorchScript port of the FVD I3D (Kinetics-400)",
    },
    "fidvid-resnet3d": {
        "filename": "resnet-50-kinetics.pth",
        "url": None,  # distributed via Google Drive links in kenshohara/3D-ResNets-PyTorch's README
        "sha256_prefix": None,
        "metric": "fid_vid",
        "source": "kenshohara/3D-ResNets-PyTorch (Hara et al. 2018), ResNet-50 Kinetics-400, shortcut B (MIT)",
    },
}


def check_filename_hash(path: Path, sha256: str) -> str:
    """"ok" / "mismatch" / "n/a": does a torch.hub-style ``name-<8 hex>.ext`` match the file's hash?"""
    m = re.search(r"-([0-9a-f]{8})\.[a-z]+$", Path(path).name)
    if not m:
        return "n/a"
    return "ok" if sha256.startswith(m.group(1)) else "mismatch"


@dataclass
class Networks:
    """The metric networks of one evaluation; ``None`` where not available (see ``missing``)."""

    lpips: object | None = None
    inception: object | None = None
    i3d: object | None = None
    resnet3d: object | None = None
    missing: dict[str, str] = field(default_factory=dict)
    #: identity embedding ``uint8 (H, W, 3) -> vector``; None = the weight-free appearance proxy
    identity: Callable | None = None
    identity_name: str | None = None

    def describe(self) -> dict[str, dict]:
        out = {}
        for metric, net in (("lpips", self.lpips), ("fid", self.inception), ("fvd", self.i3d),
                            ("fid_vid", self.resnet3d)):
            if net is None:
                out[metric] = {"available": False, "why": self.missing.get(metric, "not requested")}
                continue
            info = net.info.to_dict()
            for f in info["files"]:
                f["filename_hash_check"] = check_filename_hash(Path(f["path"]), f["sha256"])
            out[metric] = {"available": True, "text": net.info.describe(), **info}
        return out

    @property
    def any_random(self) -> bool:
        return any(n is not None and not n.info.pretrained for n in (self.lpips, self.inception, self.i3d, self.resnet3d))


# building a network draws its default init from torch's global generator: give the caller's
# state back (the loaded or seeded weights replace that init)
@torch.random.fork_rng(devices=[])
def networks_from_dir(folder: str | Path | None, *, lpips_net: str = "alex", device="cpu") -> Networks:
    """Load every metric network whose published file is in ``folder`` (see WEIGHT_FILES)."""
    from kinemate.eval.inception import load_inception
    from kinemate.eval.lpips import load_lpips
    from kinemate.eval.video_nets import load_i3d_torchscript, load_resnet3d

    nets = Networks()
    if folder is None:
        # nothing given: the folders 'kinemate weights download eval-metrics|eval-lpips-vgg' fill by default
        from kinemate.hub import default_dir

        folders = [d for d in (default_dir("eval-metrics"), default_dir("eval-lpips-vgg")) if d.is_dir()]
        if not folders:
            why = ("not available: no metric weights (--metric-weights DIR, or 'kinemate weights download "
                   "eval-metrics'); see docs/evaluation.md")
            nets.missing = {m: why for m in ("lpips", "fid", "fvd", "fid_vid")}
            return nets
        folder = folders[0]
    else:
        folder = Path(folder)
        if not folder.is_dir():
            raise UsageError(f"metric weights folder {folder} does not exist; create it and put the files of "
                             "docs/evaluation.md there (or use 'kinemate weights download eval-metrics --dir DIR')")
        folders = [folder]

    def need(key: str) -> Path | None:
        for f in folders:
            p = f / WEIGHT_FILES[key]["filename"]
            if p.is_file():
                return p
        return None

    if lpips_net not in ("alex", "vgg"):
        raise UsageError(f"--lpips-net must be 'alex' or 'vgg', got {lpips_net!r}")
    bb, hd = need(f"lpips-{lpips_net}-backbone"), need(f"lpips-{lpips_net}-heads")
    if bb and hd:
        nets.lpips = load_lpips(lpips_net, bb, hd, device=device)
    else:
        names = [WEIGHT_FILES[k]["filename"] for k in (f"lpips-{lpips_net}-backbone", f"lpips-{lpips_net}-heads")]
        nets.missing["lpips"] = f"not available: needs {' and '.join(names)} in {folder}"
    if p := need("fid-inception"):
        nets.inception = load_inception(p, device=device)
    else:
        nets.missing["fid"] = f"not available: needs {WEIGHT_FILES['fid-inception']['filename']} in {folder}"
    if p := need("fvd-i3d"):
        nets.i3d = load_i3d_torchscript(p, device=device)
    else:
        nets.missing["fvd"] = f"not available: needs {WEIGHT_FILES['fvd-i3d']['filename']} in {folder}"
    if p := need("fidvid-resnet3d"):
        nets.resnet3d = load_resnet3d(p, device=device)
    else:
        nets.missing["fid_vid"] = f"not available: needs {WEIGHT_FILES['fidvid-resnet3d']['filename']} in {folder}"
    return nets


@torch.random.fork_rng(devices=[])  # as networks_from_dir
def random_networks(seed: int = 0, *, device="cpu") -> Networks:
    """Tiny random networks for every metric (smoke tests of the plumbing; numbers meaningless)."""
    from kinemate.eval.inception import random_inception
    from kinemate.eval.lpips import random_lpips
    from kinemate.eval.video_nets import TinyI3D, VideoFeatures, random_resnet3d
    from kinemate.eval.weights import NetworkInfo, init_random

    i3d_net = init_random(TinyI3D(), seed).eval()
    i3d = VideoFeatures(i3d_net.to(device), kind="i3d", size=32, device=device,
                        info=NetworkInfo("fvd", "tiny I3D stand-in (32px)", pretrained=False, note="random, tests only"))
    r3d = random_resnet3d(seed=seed)
    r3d.net.to(device)
    r3d.device = torch.device(device)
    return Networks(lpips=random_lpips(seed=seed).to(device), inception=random_inception(seed=seed).to(device),
                    i3d=i3d, resnet3d=r3d)


def load_embedding(spec: str) -> tuple[Callable, str]:
    """Import an identity embedding given as ``package.module:function`` (a callable taking a
    uint8 (H, W, 3) RGB region and returning a 1-D vector)."""
    import importlib

    mod, _, name = spec.partition(":")
    if not mod or not name:
        raise UsageError(f"identity embedding must be 'package.module:function', got {spec!r}")
    try:
        fn = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"cannot import the identity embedding {spec!r} ({exc}); check the module path") from exc
    if not callable(fn):
        raise UsageError(f"{spec} is not callable; pass a function uint8 (H, W, 3) -> vector")
    return fn, spec
