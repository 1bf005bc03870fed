"""kinemate.hub and `kinemate weights`: downloads from a local fake hub, never the network."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from kinemate import hub
from kinemate.cli import main
from kinemate.errors import WeightsError

PAYLOAD = {
    "org/model-a": {"unet/weights.bin": b"A" * 5000, "unet/config.json": b'{"x": 1}'},
    "org/model-b": {"vae.safetensors": b"B" * 3000},
}


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def fake_hub(tmp_path):
    root = tmp_path / "fakehub"
    for repo, files in PAYLOAD.items():
        for name, data in files.items():
            p = root / repo / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    return root


@pytest.fixture
def test_set(monkeypatch):
    a, cfg = PAYLOAD["org/model-a"]["unet/weights.bin"], PAYLOAD["org/model-a"]["unet/config.json"]
    ws = hub.WeightSet(
        name="tiny-test",
        description="test set",
        usage="use {dir}",
        files=(
            hub.WeightFile("org/model-a", "unet/weights.bin", "base/unet/weights.bin",
                           sha256=_sha(a), size=len(a)),
            hub.WeightFile("org/model-a", "unet/config.json", "base/unet/config.json"),
            hub.WeightFile("org/model-b", "vae.safetensors", "vae/vae.safetensors", min_size=1000),
        ),
    )
    monkeypatch.setitem(hub.REGISTRY, ws.name, ws)
    return ws


def test_download_from_fake_hub_then_skip(tmp_path, fake_hub, test_set):
    dest = tmp_path / "w"
    lines = []
    res = hub.download("tiny-test", dest, from_folder=fake_hub, echo=lines.append)
    assert [r.status for r in res] == ["downloaded"] * 3
    assert (dest / "base/unet/weights.bin").read_bytes() == PAYLOAD["org/model-a"]["unet/weights.bin"]
    assert (dest / "vae/vae.safetensors").stat().st_size == 3000
    assert not (dest / hub.STAGING).exists()
    assert any("sha256 verified" in l for l in lines)
    assert any("not pinned" in l and _sha(b"B" * 3000) in l for l in lines)
    # second run: everything present and verified, nothing copied
    lines.clear()
    res = hub.download("tiny-test", dest, from_folder=fake_hub, echo=lines.append)
    assert [r.status for r in res] == ["present"] * 3
    assert all("present, verified" in l for l in lines)
    assert [r.status for r in hub.verify("tiny-test", dest)] == ["present"] * 3


def test_checksum_mismatch_leaves_no_file(tmp_path, fake_hub, test_set):
    (fake_hub / "org/model-a/unet/weights.bin").write_bytes(b"X" * 5000)  # same size, other bytes
    dest = tmp_path / "w"
    with pytest.raises(WeightsError, match="sha256 .*expected.*deleted"):
        hub.download("tiny-test", dest, from_folder=fake_hub, echo=lambda s: None)
    assert not (dest / "base/unet/weights.bin").exists()
    assert not list((dest / hub.STAGING).rglob("weights.bin"))


def test_size_checks(tmp_path, fake_hub, test_set):
    (fake_hub / "org/model-b/vae.safetensors").write_bytes(b"B" * 10)  # below min_size
    with pytest.raises(WeightsError, match="at least 1,000"):
        hub.download("tiny-test", tmp_path / "w", from_folder=fake_hub, echo=lambda s: None)
    assert not (tmp_path / "w/vae/vae.safetensors").exists()


def test_corrupt_present_file_is_replaced(tmp_path, fake_hub, test_set):
    dest = tmp_path / "w"
    hub.download("tiny-test", dest, from_folder=fake_hub, echo=lambda s: None)
    (dest / "base/unet/weights.bin").write_bytes(b"garbage")
    assert [r.status for r in hub.verify("tiny-test", dest)][0] == "bad"
    res = hub.download("tiny-test", dest, from_folder=fake_hub, echo=lambda s: None)
    assert [r.status for r in res] == ["downloaded", "present", "present"]
    assert hub.verify("tiny-test", dest)[0].status == "present"


def test_missing_file_in_mirror(tmp_path, fake_hub, test_set):
    (fake_hub / "org/model-b/vae.safetensors").unlink()
    with pytest.raises(WeightsError, match="not found in the local mirror"):
        hub.download("tiny-test", tmp_path / "w", from_folder=fake_hub, echo=lambda s: None)


def test_offline_hub_gives_clear_error(tmp_path, test_set):
    # conftest sets HF_HUB_OFFLINE=1: the real hf_hub_download path must fail cleanly, no network.
    with pytest.raises(WeightsError, match="offline|unreachable"):
        hub.download("tiny-test", tmp_path / "w", echo=lambda s: None)
    assert not (tmp_path / "w/base/unet/weights.bin").exists()


def test_cli_weights(tmp_path, fake_hub, test_set, capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "magicanimate" in out and "tiny-test" in out and "size only" in out
    dest = tmp_path / "w"
    assert main(["weights", "download", "tiny-test", "--dir", str(dest), "--from-folder", str(fake_hub)]) == 0
    cap = capsys.readouterr()
    assert f"ready: {dest}" in cap.out and "not pinned" in cap.err
    assert main(["weights", "verify", "tiny-test", "--dir", str(dest)]) == 0
    (dest / "vae/vae.safetensors").unlink()
    assert main(["weights", "verify", "tiny-test", "--dir", str(dest)]) == 1
    (fake_hub / "org/model-b/vae.safetensors").write_bytes(b"")
    rc = main(["weights", "download", "tiny-test", "--dir", str(dest), "--from-folder", str(fake_hub)])
    err = capsys.readouterr().err
    assert rc == 1 and "kinemate: error:" in err and "Traceback" not in err
    assert main(["weights", "download", "no-such-set"]) == 2


def test_magicanimate_registry_layout():
    ws = hub.get("magicanimate")
    targets = {f.target for f in ws.files}
    for required in (
        "MagicAnimate/temporal_attention/temporal_attention.ckpt",
        "MagicAnimate/appearance_encoder/diffusion_pytorch_model.safetensors",
        "MagicAnimate/densepose_controlnet/diffusion_pytorch_model.safetensors",
        "stable-diffusion-v1-5/unet/diffusion_pytorch_model.bin",
        "stable-diffusion-v1-5/tokenizer/vocab.json",
        "stable-diffusion-v1-5/text_encoder/model.safetensors",
        "stable-diffusion-v1-5/vae/config.json",
        "sd-vae-ft-mse/diffusion_pytorch_model.safetensors",
    ):
        assert required in targets
    assert len(targets) == len(ws.files)
    repos = {f.repo_id for f in ws.files}
    assert repos == {"zcxu-eric/MagicAnimate", "stabilityai/sd-vae-ft-mse",
                     "stable-diffusion-v1-5/stable-diffusion-v1-5"}
    for f in ws.files:
        assert f.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", f.sha256)
        if f.sha256:
            assert f.source, f"pinned hash without a recorded source: {f.target}"


def test_manifest_sizes_are_lower_bounds(reference_dir):
    """min_size of the big files equals the float32 tensor payload in the shared manifests."""
    import json

    summary = json.loads((reference_dir / "manifests/_summary.json").read_text())
    by_target = {f.target: f for f in hub.get("magicanimate").files}
    pairs = {
        "stable-diffusion-v1-5/unet/diffusion_pytorch_model.bin": "sd15_unet_diffusion_pytorch_model.bin.json",
        "MagicAnimate/appearance_encoder/diffusion_pytorch_model.safetensors":
            "appearance_encoder_diffusion_pytorch_model.safetensors.json",
        "MagicAnimate/densepose_controlnet/diffusion_pytorch_model.safetensors":
            "densepose_controlnet_diffusion_pytorch_model.safetensors.json",
        "MagicAnimate/temporal_attention/temporal_attention.ckpt": "temporal_attention.ckpt.json",
    }
    for target, manifest in pairs.items():
        assert by_target[target].min_size == summary[manifest]["bytes_fp32"]


def _serve_fake_hub(root: Path, cut_first_get: str | None = None):
    """Serve <root>/<repo_id>/<filename> at /<repo_id>/resolve/<revision>/<filename> on loopback,
    with the headers huggingface_hub reads (commit, etag, size), like the hub does."""
    import http.server
    import threading

    commit = "0123456789abcdef0123456789abcdef01234567"
    requests: list[str] = []
    cut_done: list[bool] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _resolve(self):
            m = re.fullmatch(r"/(.+?/.+?)/resolve/([^/]+)/(.+)", self.path.split("?")[0])
            if not m:
                return None
            p = root / m.group(1) / m.group(3)
            return p if p.is_file() else None

        def _headers(self, p: Path, body_len: int, status: int = 200):
            self.send_response(status)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{_sha(p.read_bytes())}"')
            self.send_header("Content-Length", str(body_len))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

        def do_HEAD(self):
            requests.append("HEAD " + self.path)
            p = self._resolve()
            if p is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._headers(p, p.stat().st_size)

        def do_GET(self):
            rng = self.headers.get("Range")
            requests.append("GET " + self.path + (f" Range={rng}" if rng else ""))
            p = self._resolve()
            if p is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = p.read_bytes()
            if cut_first_get and self.path.endswith(cut_first_get) and not cut_done:
                cut_done.append(True)  # the connection drops half-way through the first transfer
                self._headers(p, len(data))
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            if rng and (m := re.fullmatch(r"bytes=(\d+)-", rng)):
                data = data[int(m.group(1)):]
                self._headers(p, len(data), 206)
            else:
                self._headers(p, len(data))
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, requests


def test_download_through_huggingface_hub_from_loopback_server(tmp_path, fake_hub, test_set, monkeypatch):
    """The real hf_hub_download path, against a local HTTP server standing in for the hub."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    server, requests = _serve_fake_hub(fake_hub)
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        dest = tmp_path / "w"
        res = hub.download("tiny-test", dest, endpoint=endpoint, echo=lambda s: None)
        assert [r.status for r in res] == ["downloaded"] * 3
        assert (dest / "base/unet/weights.bin").read_bytes() == PAYLOAD["org/model-a"]["unet/weights.bin"]
        assert any(r.startswith("GET /org/model-a/resolve/") for r in requests)
        # a file changed upstream: rejected, and nothing left under the final name
        (fake_hub / "org/model-a/unet/weights.bin").write_bytes(b"Z" * 5000)
        with pytest.raises(WeightsError, match="failed verification"):
            hub.download("tiny-test", tmp_path / "w2", endpoint=endpoint, echo=lambda s: None)
        assert not (tmp_path / "w2/base/unet/weights.bin").exists()
        (fake_hub / "org/model-a/unet/weights.bin").write_bytes(PAYLOAD["org/model-a"]["unet/weights.bin"])
        (fake_hub / "org/model-b/vae.safetensors").unlink()
        with pytest.raises(WeightsError, match="vae.safetensors.*not on the hub"):
            hub.download("tiny-test", tmp_path / "w3", endpoint=endpoint, echo=lambda s: None, force=True)
    finally:
        server.shutdown()


def test_sha256_prefix_from_torch_hub_style_name(tmp_path, monkeypatch):
    data = b"weights" * 100
    good = f"net-{_sha(data)[:8]}.pth"
    mirror = tmp_path / "m"
    (mirror / "host").mkdir(parents=True)
    (mirror / "host" / good).write_bytes(data)
    (mirror / "host" / "net-deadbeef.pth").write_bytes(data)
    ws = hub.WeightSet("prefix-test", "t", files=(
        hub.WeightFile("host", good, good, url=f"https://example.invalid/{good}"),))
    monkeypatch.setitem(hub.REGISTRY, ws.name, ws)
    assert hub.how_checked(ws.files[0]).startswith("sha256 prefix")
    res = hub.download("prefix-test", tmp_path / "w", from_folder=mirror, echo=lambda s: None)
    assert res[0].status == "downloaded"
    bad = hub.WeightSet("prefix-bad", "t", files=(
        hub.WeightFile("host", "net-deadbeef.pth", "net.pth", url="https://example.invalid/net-deadbeef.pth"),))
    monkeypatch.setitem(hub.REGISTRY, bad.name, bad)
    with pytest.raises(WeightsError, match="does not start with deadbeef"):
        hub.download("prefix-bad", tmp_path / "w2", from_folder=mirror, echo=lambda s: None)
    assert not (tmp_path / "w2/net.pth").exists()


def test_interrupted_hub_download_resumes(tmp_path, monkeypatch):
    """The connection drops half-way: the next attempt asks only for the rest (HTTP Range).

    huggingface_hub reads in 10 MB chunks, so the file is 21 MB to have a partial chunk on disk.
    """
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    data = bytes(range(256)) * (21 * 4096)
    root = tmp_path / "fakehub"
    (root / "org/big").mkdir(parents=True)
    (root / "org/big/big.bin").write_bytes(data)
    ws = hub.WeightSet("big-test", "t", files=(
        hub.WeightFile("org/big", "big.bin", "big.bin", sha256=_sha(data), size=len(data)),))
    monkeypatch.setitem(hub.REGISTRY, ws.name, ws)
    server, requests = _serve_fake_hub(root, cut_first_get="big.bin")
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        dest = tmp_path / "w"
        for _attempt in range(3):  # huggingface_hub may retry by itself; else the user re-runs
            try:
                hub.download("big-test", dest, endpoint=endpoint, echo=lambda s: None)
                break
            except WeightsError as exc:
                assert "run the command again" in str(exc)
                assert not (dest / "big.bin").exists()
        assert hub.verify("big-test", dest)[0].status == "present"
        gets = [r for r in requests if r.startswith("GET")]
        assert len(gets) >= 2 and re.search(r"Range=bytes=[1-9]\d*-", gets[-1]), gets
    finally:
        server.shutdown()


def test_url_download_streams_to_a_temporary_name(tmp_path, monkeypatch):
    """A file published outside the hub arrives under its name only when complete and verified;
    a failed download leaves no file behind."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    data = b"net" * 1000
    pub = tmp_path / "pub"
    pub.mkdir()
    (pub / "net.pth").write_bytes(data)
    ok = hub.WeightSet("url-test", "t", files=(
        hub.WeightFile("host", "net.pth", "nets/net.pth", url=(pub / "net.pth").as_uri(),
                       sha256=_sha(data)),))
    gone = hub.WeightSet("url-gone", "t", files=(
        hub.WeightFile("host", "gone.pth", "gone.pth", url=(pub / "gone.pth").as_uri()),))
    monkeypatch.setitem(hub.REGISTRY, ok.name, ok)
    monkeypatch.setitem(hub.REGISTRY, gone.name, gone)
    dest = tmp_path / "w"
    assert hub.download("url-test", dest, echo=lambda s: None)[0].status == "downloaded"
    assert (dest / "nets" / "net.pth").read_bytes() == data
    assert not (dest / hub.STAGING).exists()
    with pytest.raises(WeightsError, match="downloading .*gone.pth failed"):
        hub.download("url-gone", tmp_path / "w2", echo=lambda s: None)
    assert not [p for p in (tmp_path / "w2").rglob("*") if p.is_file()]
