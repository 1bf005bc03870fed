"""Service hardening (issue 18): slow and idle clients, offline doc pages, a pose file over the
frame limit, an operator's data folder, and revoking keys by id."""

from __future__ import annotations

import json
import re
import socket
import stat
import threading
from pathlib import Path

import pytest
from service_helpers import Server

from kinemate.cli import main
from kinemate.service.store import SQLiteJobStore


# -- slow clients ---------------------------------------------------------------------------
def _closed_by_server(sock: socket.socket, wait: float) -> bool:
    """True once the server has closed ``sock`` (EOF or reset) within ``wait`` seconds."""
    sock.settimeout(wait)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory):
    """A server with 2 s read deadlines and room for 10 connections (no model needed)."""
    srv = Server(tmp_path_factory.mktemp("guarded-data"), None,
                 ["--header-timeout", "2", "--body-timeout", "2", "--max-connections", "10"])
    srv.start(until=("starting", "loading", "ready", "error"))
    yield srv
    srv.stop()


def test_half_sent_requests_are_closed_and_lock_nobody_out(guarded_server):
    srv = guarded_server
    key = srv.new_key("slow")
    half_open: dict[str, list[socket.socket]] = {"headers": [], "body": [], "nothing": []}
    try:
        for i in range(20):  # twice the connection limit
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            if i % 4 == 0:  # headers complete, then half of a body, then silence
                sock.sendall(f"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                             f"{key}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                             "Content-Length: 100000\r\n\r\n--b\r\n".encode())
                half_open["body"].append(sock)
            elif i % 4 == 1:  # connected, nothing sent
                half_open["nothing"].append(sock)
            else:  # half of the headers
                sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
                half_open["headers"].append(sock)
        # A normal request meanwhile is served (at the limit, the oldest idle connection
        # makes room for it), and promptly: well before the 2 s deadlines free anything.
        res = srv.client.get("/api/v1/health", timeout=10)
        assert res.status == 200, (res.status, res.body)
        # A client trickling its headers a byte at a time is closed at the deadline too.
        trickler = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        half_open["headers"].append(trickler)
        stop = threading.Event()

        def trickle():
            for byte in b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
                if stop.wait(0.2):
                    return
                try:
                    trickler.send(bytes([byte]))
                except OSError:
                    return

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        for kind, socks in half_open.items():
            for sock in socks:  # closed by the server (they would stay open forever before)
                assert _closed_by_server(sock, 20), f"a connection with {kind} stayed open"
        stop.set()
        thread.join(5)
    finally:
        for socks in half_open.values():
            for sock in socks:
                sock.close()
    log = srv.log_path.read_text(errors="replace")
    assert "no complete request headers within 2 s" in log
    assert "no request body data for 2 s" in log
    assert "limit of 10 connections" in log
    assert srv.client.get("/api/v1/health", timeout=10).status == 200


def test_read_timeout_options_are_checked():
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--header-timeout", "x"])
    assert exc.value.code == 2
    assert main(["serve", "--header-timeout", "0"]) == 2
    assert main(["serve", "--max-connections", "1"]) == 2


# -- doc pages: offline only, with the page's security headers ------------------------------
def test_docs_and_redoc_lead_to_the_offline_reference(client):
    index = client.get("/")
    for path in ("/docs", "/redoc"):
        res = client.get(path)
        assert res.status == 308 and res.headers["location"] == "/reference", path
        for header in ("content-security-policy", "x-frame-options", "x-content-type-options",
                       "referrer-policy"):
            assert res.headers.get(header) == index.headers[header], (path, header)
        assert b"cdn" not in res.body.lower()
    page = client.get("/reference")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    html = page.body.decode()
    # Nothing loaded from another host: no absolute or protocol-relative URL in any attribute.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I), html[:500]
    assert "<script" not in html.lower() and "@font-face" not in html and "@import" not in html


# -- a pose file over the frame limit -------------------------------------------------------
def test_pose_json_over_the_frame_limit_is_refused_before_parsing(client, key, tiny_inputs):
    # 1,501 malformed frames: refused for their number (413), not for frame 0 (400), which
    # shows the limit is checked before any frame is parsed.
    track = {"format": "kinemate.pose", "version": 1, "image_size": [64, 64], "fps": 25,
             "frames": ["not a frame"] * 1501}
    res = client.submit(key, tiny_inputs["reference"].read_bytes(), json.dumps(track).encode(),
                        drv_name="moves.json", params={"control": "pose"})
    assert res.status == 413, res.body
    assert "1501 frames, above the limit of 1500" in res.detail


# -- the data folder ----------------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_data_folder_made_beforehand_ends_owner_only(tmp_path, capsys):
    from kinemate.service.app import create_app
    from kinemate.service.config import ServiceConfig

    data = tmp_path / "srv"
    (data / "jobs").mkdir(parents=True)
    data.chmod(0o755)
    (data / "jobs").chmod(0o755)
    assert main(["serve", "keys", "create", "--name", "ops", "--data-dir", str(data)]) == 0
    db = data / "kinemate.db"
    assert _mode(db) == 0o600  # created private
    for suffix in ("-wal", "-shm"):  # SQLite gives them the database's mode
        side = db.with_name(db.name + suffix)
        assert not side.exists() or _mode(side) == 0o600, suffix
    db.chmod(0o644)  # an older kinemate's database
    create_app(ServiceConfig(data_dir=data, start_worker=False))
    assert (_mode(data), _mode(data / "jobs"), _mode(db)) == (0o700, 0o700, 0o600)
    capsys.readouterr()


# -- revoking keys --------------------------------------------------------------------------
def test_revoke_takes_an_id_and_never_matches_a_name(tmp_path, capsys):
    data = tmp_path / "keys"
    store = SQLiteJobStore(data / "kinemate.db")
    alice, alice_secret = store.create_key("alice")
    # A key whose name is alice's id, and two keys named bob.
    confusing, confusing_secret = store.create_key(alice.id)
    bob1, bob1_secret = store.create_key("bob")
    bob2, bob2_secret = store.create_key("bob")
    capsys.readouterr()

    def revoke(*args) -> tuple[int, str]:
        rc = main(["serve", "keys", "revoke", *args, "--data-dir", str(data)])
        out = capsys.readouterr()
        return rc, out.out + out.err

    rc, out = revoke(alice.id)
    assert rc == 0 and out.strip() == f"revoked key {alice.id} (alice)"
    assert store.authenticate(alice_secret) is None
    assert store.authenticate(confusing_secret) is not None  # its name matched: untouched

    rc, out = revoke("bob")  # a name given as an id: refused, and told how
    assert rc == 2 and "no active key has the id 'bob'" in out and "--name 'bob'" in out
    assert store.authenticate(bob1_secret) and store.authenticate(bob2_secret)

    rc, out = revoke("--name", "bob")
    assert rc == 0
    assert out.splitlines() == [f"revoked key {bob1.id} (bob)", f"revoked key {bob2.id} (bob)"]
    assert store.authenticate(bob1_secret) is None and store.authenticate(bob2_secret) is None

    assert revoke(alice.id)[0] == 2  # already revoked
    assert revoke()[0] == 2 and revoke(confusing.id, "--name", "x")[0] == 2
    store.close()
