"""Metric networks: plumbing with tiny random nets, loading of the published file layouts,
and the Fréchet distance computed for real."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kinemate.errors import WeightsError
from kinemate.eval import fid as FD
from kinemate.eval.inception import FIDInceptionV3, load_inception, random_inception
from kinemate.eval.lpips import LPIPS, load_lpips, lpips_frames, random_lpips
from kinemate.eval.video_nets import ResNet3D, TinyI3D, load_i3d_torchscript, load_resnet3d, random_resnet3d

@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny networks on a shared 2-core machine: one intra-op thread avoids spin contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)



def _frames(seed, n=3, h=64, w=64):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------- LPIPS

def test_lpips_identical_zero_and_positive_otherwise():
    model = random_lpips("alex")
    a, b = _frames(0), _frames(1)
    assert np.allclose(lpips_frames(model, a, a), 0.0)
    d = lpips_frames(model, a, b)
    assert d.shape == (3,) and np.all(d > 0)
    # symmetric
    assert np.allclose(lpips_frames(model, b, a), d, rtol=1e-5)


def test_lpips_vgg_plumbing_runs_and_grows_with_noise():
    model = random_lpips("vgg", width=0.0625)
    a = np.repeat(_frames(0, n=1, h=8, w=8), 8, axis=1).repeat(8, axis=2)  # smooth 64x64
    rng = np.random.default_rng(0)
    small = np.clip(a + rng.normal(0, 4, a.shape), 0, 255).astype(np.uint8)
    large = np.clip(a + rng.normal(0, 60, a.shape), 0, 255).astype(np.uint8)
    assert lpips_frames(model, a, large)[0] > lpips_frames(model, a, small)[0] > 0


def test_lpips_loads_torchvision_and_v01_head_layouts(tmp_path):
    # Files in the published layouts (torchvision alexnet state dict incl. classifier; LPIPS heads)
    torch.manual_seed(0)
    ref = LPIPS("alex")
    backbone = {k: torch.randn_like(v) for k, v in ref.net.state_dict().items()}
    backbone["classifier.1.weight"] = torch.zeros(4, 4)  # extra keys are ignored
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate([64, 192, 384, 256, 256])}
    torch.save(backbone, tmp_path / "alexnet-owt-7be5be79.pth")
    torch.save(heads, tmp_path / "alex.pth")
    model = load_lpips("alex", tmp_path / "alexnet-owt-7be5be79.pth", tmp_path / "alex.pth")
    assert torch.equal(model.net.features[0].weight, backbone["features.0.weight"])
    assert torch.equal(model.lin4.model[1].weight, heads["lin4.model.1.weight"])
    assert model.info.pretrained and len(model.info.files[0]["sha256"]) == 64
    a = _frames(2, n=1)
    assert lpips_frames(model, a, a)[0] == pytest.approx(0.0, abs=1e-7)
    # a wrong file is a WeightsError that names the problem
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="missing"):
        load_lpips("alex", tmp_path / "bad.pth", tmp_path / "alex.pth")
    with pytest.raises(WeightsError, match="not found"):
        load_lpips("alex", tmp_path / "nope.pth", tmp_path / "alex.pth")


def test_backbones_use_torchvision_key_names():
    alex = {k for k in LPIPS("alex", width=0.05).net.state_dict()}
    assert alex == {f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")}
    vgg = {k for k in LPIPS("vgg", width=0.05).net.state_dict()}
    convs = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    assert vgg == {f"features.{i}.{p}" for i in convs for p in ("weight", "bias")}


# ---------------------------------------------------------------- Fréchet / FID

def test_frechet_distance_hand_computed_gaussians():
    # diagonal covariances: d = |mu1-mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2
    mu1, mu2 = np.array([0.0, 1.0]), np.array([3.0, -1.0])
    s1, s2 = np.diag([4.0, 1.0]), np.diag([1.0, 9.0])
    expected = (9 + 4) + (2 - 1) ** 2 + (1 - 3) ** 2
    assert FD.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected)
    assert FD.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_of_samples_matches_shift():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 4))
    assert FD.frechet_from_features(x, x) == pytest.approx(0.0, abs=1e-8)
    assert FD.frechet_from_features(x, x + 2.0) == pytest.approx(16.0, rel=1e-6)
    # singular covariance (rank 1 < D) still gives a finite, sane value
    y = np.repeat(rng.normal(size=(10, 1)), 5, axis=1)
    assert np.isfinite(FD.frechet_from_features(y, y + 1))


def test_fid_with_random_tiny_inception():
    model = random_inception()
    base = _frames(0, n=12, h=48, w=48)
    fa = FD.image_features(model, base, batch=5)
    assert fa.shape == (12, model.dim)
    same = FD.frechet_from_features(fa, FD.image_features(model, base))
    assert same == pytest.approx(0.0, abs=1e-6)
    darker = (base // 3).astype(np.uint8)
    assert FD.frechet_from_features(fa, FD.image_features(model, darker)) > 1e-3


def test_inception_key_names_and_loading(tmp_path):
    full = FIDInceptionV3()
    keys = set(full.state_dict())
    assert "Mixed_7c.branch3x3dbl_3b.bn.running_var" in keys
    assert "Conv2d_1a_3x3.conv.weight" in keys and full.dim == 2048
    # a tiny model round-trips through the loader's key check (same code as the 2048-d one)
    tiny = random_inception()
    sd = tiny.state_dict()
    torch.save({**sd, "fc.weight": torch.zeros(2, 2)}, tmp_path / "incep.pth")
    with pytest.raises(WeightsError, match="does not match"):
        load_inception(tmp_path / "incep.pth")


# ---------------------------------------------------------------- video networks

@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_i3d_torchscript_loader_and_fvd(tmp_path):
    torch.manual_seed(0)
    scripted = torch.jit.script(TinyI3D())
    scripted.save(str(tmp_path / "i3d_torchscript.pt"))
    feats = load_i3d_torchscript(tmp_path / "i3d_torchscript.pt", size=32)
    clips = [_frames(i, n=8, h=40, w=56) for i in range(6)]
    f = feats(clips, batch=4)
    assert f.shape == (6, 16)
    assert FD.frechet_from_features(f, feats(clips)) == pytest.approx(0.0, abs=1e-6)
    assert feats.info.files[0]["sha256"]
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(WeightsError, match="TorchScript"):
        load_i3d_torchscript(tmp_path / "junk.pt")


def test_resnet3d_keys_and_features(tmp_path):
    keys = set(ResNet3D().state_dict())
    assert {"conv1.weight", "layer1.0.downsample.0.weight", "layer4.2.bn3.running_mean"} <= keys
    feats = random_resnet3d()
    clips = [_frames(i, n=8, h=40, w=40) for i in range(3)]
    f = feats(clips)
    assert f.shape == (3, feats.net.dim)
    # DataParallel-style checkpoint {'state_dict': {'module.…'}} loads
    net = ResNet3D(layers=(1, 1, 1, 1), width=0.0625)
    torch.save({"arch": "resnet-50", "state_dict": {"module." + k: v for k, v in net.state_dict().items()}},
               tmp_path / "r3d.pth")
    with pytest.raises(WeightsError, match="missing"):
        load_resnet3d(tmp_path / "r3d.pth")  # tiny file vs full-size architecture


def test_full_size_architectures_match_published_parameter_counts():
    """Counts from torchvision's model docs: AlexNet 61,100,840 = features 2,469,696 + classifier
    58,631,144; VGG16 138,357,544 = features 14,714,688 + classifier 123,642,856; Inception v3
    27,161,264 = 21,785,568 + AuxLogits 3,326,696 + fc 2,049,000."""
    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert count(LPIPS("alex").net) == 2_469_696
    assert count(LPIPS("vgg").net) == 14_714_688
    assert count(FIDInceptionV3()) == 21_785_568
