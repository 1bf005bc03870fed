"""The PCA patch autoencoder: lossless at full width, best linear code when truncated, saved and
loaded like any component, and the pipeline's latent size follows its patch size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kinemate.models import PatchAutoencoder, latent_downsample
from kinemate.models.loading import load_component, save_component


def _frames(seeds, n=4, size=32) -> torch.Tensor:
    from kinemate.synth import generate_clip

    out = [generate_clip(s, num_frames=n, size=(size, size), skeleton=False).frames for s in seeds]
    x = torch.from_numpy(np.concatenate(out)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1


@pytest.fixture(scope="module")
def data():
    return _frames(range(6)), _frames(range(1_000_000, 1_000_003))


def test_full_width_is_lossless_and_whitened_to_unit_scale(data):
    train, heldout = data
    vae = PatchAutoencoder(patch_size=4).fit(train)
    assert vae.config.latent_channels == 48 and vae.basis.shape == (48, 48)
    assert torch.allclose(vae.basis.T @ vae.basis, torch.eye(48), atol=1e-5)  # orthonormal
    z = vae.encode(heldout).latent_dist.mean
    assert z.shape == (len(heldout), 48, 8, 8) and latent_downsample(vae) == 4
    rec = vae.decode(z).sample
    assert float((rec - heldout).abs().max()) < 1e-4
    # the scaling factor puts the training latents at unit standard deviation
    zt = vae.encode(train).latent_dist.mean * vae.config.scaling_factor
    assert abs(float(zt.std()) - 1.0) < 1e-3


def test_truncated_code_is_better_than_an_unfitted_one(data):
    train, heldout = data
    errs = {}
    for k in (6, 12, 24):
        vae = PatchAutoencoder(patch_size=4, latent_channels=k).fit(train)
        errs[k] = float((vae(heldout).sample - heldout).pow(2).mean())
    assert errs[6] > errs[12] > errs[24] > 0
    unfitted = PatchAutoencoder(patch_size=4, latent_channels=12)
    err_unfitted = float((unfitted(heldout).sample - heldout).pow(2).mean())
    assert errs[12] < 0.5 * err_unfitted


def test_fit_is_deterministic_and_roundtrips_through_the_component_format(data, tmp_path):
    train, heldout = data
    a = PatchAutoencoder(patch_size=4, latent_channels=16).fit(train)
    b = PatchAutoencoder(patch_size=4, latent_channels=16).fit(train)
    assert torch.equal(a.basis, b.basis) and torch.equal(a.mean, b.mean)
    save_component(a, tmp_path / "vae")
    loaded = load_component("vae", tmp_path / "vae")
    # saved again after loading: no record of the folder it was loaded from
    save_component(loaded, tmp_path / "again")
    assert "_name_or_path" not in (tmp_path / "again" / "config.json").read_text()
    assert isinstance(loaded, PatchAutoencoder)
    assert loaded.config.scaling_factor == a.config.scaling_factor
    assert torch.equal(loaded.encode(heldout).latent_dist.mean, a.encode(heldout).latent_dist.mean)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="latent_channels"):
        PatchAutoencoder(patch_size=2, latent_channels=13)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        PatchAutoencoder(patch_size=4).encode(torch.zeros(1, 3, 30, 32))
