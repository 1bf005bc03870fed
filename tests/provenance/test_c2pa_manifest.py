"""C2PA: sign -> read back -> fields present; local key chain; configured credentials."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kinemate.errors import ConfigError
from kinemate.io import write_image, write_video
from kinemate.provenance import (
    build_manifest,
    load_credentials,
    make_marker,
    read_manifest,
    sign_in_place,
    write_marked_image,
)
from kinemate.provenance.manifest import TRAINED_ALGORITHMIC_MEDIA


def _frames(n=3, size=64):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_local_credentials_created_once(kinemate_home):
    a = load_credentials()
    b = load_credentials()
    assert a.local and a.signing_kind == "local-untrusted"
    assert a.cert_chain_pem == b.cert_chain_pem  # generated once, then reused
    assert a.cert_chain_pem.count(b"BEGIN CERTIFICATE") == 2  # leaf + local CA
    key = kinemate_home / "c2pa-local" / "signer.key"
    assert key.is_file() and (key.stat().st_mode & 0o077) == 0


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".gif", ".mp4"])
def test_sign_read_back_fields(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    if suffix in (".png", ".jpg"):
        write_image(path, _frames(1)[0])
    else:
        write_video(path, _frames(), 8)
    settings = {"steps": 4, "seed": 7, "reference": tmp_path / "ref.png"}
    sign_in_place(path, build_manifest("kinemate-tiny", settings, watermark=True,
                                       signing_kind="local-untrusted", title=path.name))
    rep = read_manifest(path)
    assert rep.present and rep.valid, rep.validation_errors
    assert rep.by_kinemate
    assert rep.claim_generator.startswith("kinemate")
    created = [a for a in rep.actions if a["action"] == "c2pa.created"]
    assert created and created[0]["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert created[0]["softwareAgent"]["name"] == "kinemate"
    assert rep.kinemate["model"] == "kinemate-tiny"
    assert rep.kinemate["settings"]["steps"] == 4
    assert rep.kinemate["settings"]["reference"].endswith("ref.png")
    assert rep.kinemate["watermark"] is True
    assert rep.kinemate["signing"] == "local-untrusted"
    assert "kinemate local" in rep.signer["issuer"]


def test_tampered_file_fails_validation(tmp_path):
    path = tmp_path / "out.png"
    write_image(path, _frames(1, 96)[0])
    sign_in_place(path, build_manifest("kinemate-tiny", {}, watermark=True,
                                       signing_kind="local-untrusted", title="out.png"))
    # Change the pixels but keep the manifest: flip a byte inside the PNG image data.
    data = bytearray(path.read_bytes())
    idat = data.find(b"IDAT")
    data[idat + 20] ^= 0xFF
    path.write_bytes(bytes(data))
    rep = read_manifest(path)
    assert rep.present and not rep.valid and not rep.by_kinemate
    assert rep.validation_errors


def test_no_manifest_in_plain_file(tmp_path):
    path = tmp_path / "plain.png"
    write_image(path, _frames(1)[0])
    rep = read_manifest(path)
    assert not rep.present and not rep.by_kinemate


def test_configured_credentials_from_env(tmp_path, monkeypatch, kinemate_home):
    local = load_credentials()  # a valid chain to act as the "user's" certificate
    cert, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    cert.write_bytes(local.cert_chain_pem)
    key.write_bytes(local.key_pem)
    monkeypatch.setenv("KINEMATE_C2PA_CERT", str(cert))
    monkeypatch.setenv("KINEMATE_C2PA_KEY", str(key))
    creds = load_credentials()
    assert not creds.local and creds.signing_kind == "configured"
    path = tmp_path / "img.png"
    write_marked_image(path, _frames(1, 128)[0], make_marker("kinemate-tiny", {}))
    assert read_manifest(path).kinemate["signing"] == "configured"
    monkeypatch.delenv("KINEMATE_C2PA_KEY")
    with pytest.raises(ConfigError, match="together"):
        load_credentials()


def test_config_file_credentials(tmp_path, kinemate_home):
    local = load_credentials()
    (kinemate_home / "mine").mkdir()
    (kinemate_home / "mine" / "c.pem").write_bytes(local.cert_chain_pem)
    (kinemate_home / "mine" / "k.pem").write_bytes(local.key_pem)
    cfg = kinemate_home / "c2pa.json"
    cfg.write_text(json.dumps({"cert": "mine/c.pem", "key": "mine/k.pem"}))
    try:
        creds = load_credentials()
        assert creds.signing_kind == "configured" and creds.source == str(cfg)
        cfg.write_text("{not json")
        with pytest.raises(ConfigError, match="c2pa.json"):
            load_credentials()
    finally:
        cfg.unlink()
