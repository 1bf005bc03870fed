"""Helpers of the service tests: a stdlib HTTP client and a real `kinemate serve` subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from kinemate.service.store import SQLiteJobStore

REPO = Path(__file__).resolve().parents[2]
GOLDEN_WEIGHTS = REPO.parent / "shared" / "reference" / "magicanimate" / "golden" / "weights"
BUNDLED_MODEL = REPO / "kinemate" / "assets" / "kinemate-tiny"
TINY_SIZE = "64x64"  # output size used by the tests (multiple of 8, tiny)
# The golden test model's own sampling defaults: not the official 25 steps / 7.5, so a job
# that leaves them out shows whether the model's defaults were used.
MODEL_OPTIONS = {"steps": 2, "guidance": 2.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_model(tmp_dir: Path) -> Path | None:
    """The tiny model the test server runs: the golden MagicAnimate-layout weights with the
    golden text embeddings stored beside them (the golden set ships no CLIP), saved in
    kinemate format and declaring :data:`MODEL_OPTIONS`; without the golden set, the bundled
    kinemate-tiny model (None = the server's default)."""
    if not GOLDEN_WEIGHTS.is_dir():
        return None
    from safetensors.torch import load_file, save_file

    from kinemate.pipeline import load_pipeline

    release = tmp_dir / "golden-release"
    release.mkdir()
    for sub in GOLDEN_WEIGHTS.iterdir():
        os.symlink(sub, release / sub.name)
    inputs = load_file(str(GOLDEN_WEIGHTS.parent / "inputs.safetensors"))
    save_file({"uncond": inputs["text_embeds_uncond"], "cond": inputs["text_embeds_cond"]},
              str(release / "text_embeddings.safetensors"))
    pipe = load_pipeline(release)
    pipe.options = pipe.options.merged(MODEL_OPTIONS)
    return Path(pipe.save_pretrained(tmp_dir / "golden-tiny"))


def model_defaults(model: Path | None):
    """The sampling options a model folder declares (None: the bundled model) over the
    official defaults: what a job that sets none of them runs with."""
    from kinemate.pipeline.options import SamplingOptions

    index = json.loads(((model or BUNDLED_MODEL) / "kinemate.json").read_text())
    return SamplingOptions.from_model(index.get("options"))


# -- a minimal HTTP client (stdlib only, so malformed requests are possible too) ----------
class Response:
    def __init__(self, status: int, headers: dict, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    @property
    def detail(self) -> str:
        try:
            return str(self.json().get("detail", ""))
        except Exception:  # noqa: BLE001
            return self.body[:200].decode("utf-8", "replace")


def multipart(fields: list[tuple]) -> tuple[bytes, str]:
    """fields: (name, value) for text, (name, filename, bytes[, content_type]) for files."""
    boundary = "----kinemate" + uuid.uuid4().hex
    out = bytearray()
    for item in fields:
        out += f"--{boundary}\r\n".encode()
        if len(item) == 2:
            name, value = item
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            out += value.encode("utf-8") if isinstance(value, str) else value
        else:
            name, filename, data = item[:3]
            ctype = item[3] if len(item) > 3 else "application/octet-stream"
            fn = filename.replace('"', "%22").replace("\r", "").replace("\n", "")
            out += (f'Content-Disposition: form-data; name="{name}"; filename="{fn}"\r\n'
                    f"Content-Type: {ctype}\r\n\r\n").encode("utf-8")
            out += data
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


class Client:
    def __init__(self, base: str):
        self.base = base
        self.host, port = base.split("//")[1].split(":")
        self.port = int(port)

    def request(self, method: str, path: str, *, key: str | None = None, body: bytes | None = None,
                headers: dict | None = None, fields: list | None = None,
                timeout: float = 60.0) -> Response:
        import http.client

        hdrs = dict(headers or {})
        if fields is not None:
            body, ctype = multipart(fields)
            hdrs.setdefault("Content-Type", ctype)
        if key is not None:
            hdrs.setdefault("Authorization", f"Bearer {key}")
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            res = conn.getresponse()
            return Response(res.status, {k.lower(): v for k, v in res.getheaders()}, res.read())
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def submit(self, key: str, reference: bytes, driving: bytes, *, ref_name="photo.png",
               drv_name="dance.mp4", params: dict | None = None, headers=None) -> Response:
        """Create a job (1 step at the tiny size unless ``params`` say otherwise; a value of
        None leaves that field out)."""
        params = {"steps": "1", "size": TINY_SIZE, **(params or {})}
        fields = [("reference", ref_name, reference, "image/png"),
                  ("driving", drv_name, driving, "video/mp4")]
        fields += [(k, str(v)) for k, v in params.items() if v is not None]
        return self.post("/api/v1/jobs", key=key, fields=fields, headers=headers)

    def wait(self, key: str, job_id: str, *, states=("succeeded", "failed", "cancelled"),
             timeout: float = 120.0, predicate=None) -> dict:
        deadline = time.monotonic() + timeout
        job = None
        while time.monotonic() < deadline:
            res = self.get(f"/api/v1/jobs/{job_id}", key=key)
            assert res.status == 200, res.body
            job = res.json()
            if job["state"] in states or (predicate is not None and predicate(job)):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not reach {states} in {timeout} s: {job}")


# -- the server ---------------------------------------------------------------------------
def _die_with_parent() -> None:
    """In the child: get SIGKILL when the test process dies, so no server outlives a killed
    test run (Linux prctl PR_SET_PDEATHSIG; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


class Server:
    def __init__(self, data_dir: Path, weights: Path | None = None,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.env = dict(env or {})  # on top of this process's environment
        self.weights = weights
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = Client(self.url)
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir / f"server-{self.port}.log"

    def start(self, timeout: float = 120.0, until: tuple[str, ...] = ("ready",)) -> "Server":
        """Start and wait until the worker state is one of ``until``."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "kinemate", "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if self.weights is not None:
            cmd += ["--weights", str(self.weights)]
        cmd += self.extra_args
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **self.env)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     cwd=REPO, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                health = self.client.get("/api/v1/health", timeout=2).json()
                state = health["worker"]["state"]
                if state in until:
                    return self
                if state == "error":
                    raise AssertionError(f"worker failed to load: {health}\n{self.log()}")
            except (OSError, ValueError):
                pass
            time.sleep(0.25)
        raise AssertionError(f"server not ready in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self, timeout: float = 180.0) -> "Server":
        """Start again on the same port and data folder (after :meth:`kill` or :meth:`stop`)."""
        if getattr(self, "_log", None):
            self._log.close()
        return self.start(timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "_log", None):
            self._log.close()

    def new_key(self, name: str = "test") -> str:
        store = SQLiteJobStore(self.data_dir / "kinemate.db")
        try:
            return store.create_key(name)[1]
        finally:
            store.close()


def artifacts_dir() -> Path:
    path = Path(os.environ.get("KINEMATE_ARTIFACTS", REPO / "tests" / "artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- a pool: `kinemate worker` processes, an S3-compatible server -------------------------
class WorkerProcess:
    """A real `kinemate worker` subprocess on a job database and a media storage."""

    def __init__(self, db: str, media: str, weights: Path | None, log_dir: Path,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 name: str = "worker"):
        self.db, self.media, self.weights = db, media, weights
        self.extra_args = extra_args or []
        self.env = dict(env or {})
        self.metrics_port = free_port()
        self.log_path = log_dir / f"{name}-{self.metrics_port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        cmd = [sys.executable, "-m", "kinemate", "worker", "--db", self.db, "--media",
               self.media, "--device", "cpu", "--poll-seconds", "0.1",
               "--metrics-port", str(self.metrics_port)]
        if self.weights is not None:
            cmd += ["--weights", str(self.weights)]
        cmd += self.extra_args
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **self.env)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     cwd=REPO, preexec_fn=_die_with_parent)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, store, timeout: float = 120.0) -> "WorkerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            mine = [w for w in store.list_workers() if w.id.split(":")[1] == str(self.pid)]
            if mine and mine[0].state == "ready":
                return self
            time.sleep(0.2)
        raise AssertionError(f"worker not ready in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "_log", None):
            self._log.close()


class S3Server:
    """moto's S3-compatible server (``python -m moto.server``) as a real process on loopback;
    ``env`` is what a boto3 client needs to reach it."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "kinemate-test",
                    "AWS_SECRET_ACCESS_KEY": "kinemate-test-secret",
                    "AWS_DEFAULT_REGION": "us-east-1"}
        self.log_path = log_dir / f"s3-{self.port}.log"

    def start(self, timeout: float = 60.0) -> "S3Server":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
            env=dict(os.environ, **self.env))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"moto server exited:\n{self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError("moto server did not start")

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self._log.close()
