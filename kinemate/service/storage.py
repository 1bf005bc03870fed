"""Where job files live: uploads, results and the sampler state that lets a job resume.

Every process of a deployment (the API and every worker, on any host) must reach the same
storage, since the worker that runs a job is rarely the process that accepted it.

* :class:`LocalStorage` — a folder (``--media /srv/kinemate/jobs``, by default the data
  folder's ``jobs/``): one folder per job. Several hosts share it through NFS or any shared
  file system; workers run a job in its folder.
* :class:`S3Storage` — an S3-compatible object store (``--media s3://bucket/prefix``; AWS,
  MinIO, Ceph, R2, ...) through boto3, an optional dependency. The endpoint and credentials
  come from boto3's own configuration (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).
  A worker copies a job's inputs (and its saved sampler state) into a local scratch folder,
  runs it there, copies the sampler state back after every finished step, and uploads the
  results under names that carry the run's fencing token (``result-r3.mp4``) before the
  fenced ``finish`` names them in the database: a worker that lost its lease may upload, but
  what it uploaded is never what the job points to.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator, Protocol

from kinemate.errors import ConfigError, KinemateError
from kinemate.io.atomic import atomic_path


class StorageUnavailable(KinemateError):
    """The media storage cannot be reached."""


class Storage(Protocol):
    url: str
    in_place: bool  # True: workers run jobs in their folder (local_dir is shared)

    def local_dir(self, job_id: str) -> Path: ...
    def put(self, job_id: str, name: str, source: Path) -> None: ...
    def fetch(self, job_id: str, name: str, dest: Path) -> bool: ...
    def exists(self, job_id: str, name: str) -> bool: ...
    def remove(self, job_id: str, name: str) -> None: ...
    def delete_job(self, job_id: str) -> None: ...
    def stream(self, job_id: str, name: str) -> tuple[Iterator[bytes], int] | None: ...


class LocalStorage:
    """Job folders under ``root`` (a local or shared folder)."""

    in_place = True

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.url = str(self.root)

    def local_dir(self, job_id: str) -> Path:
        return self.root / job_id

    def put(self, job_id: str, name: str, source: Path) -> None:
        dest = self.local_dir(job_id) / name
        if Path(source).resolve() == dest.resolve():
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            shutil.copyfile(source, tmp)

    def fetch(self, job_id: str, name: str, dest: Path) -> bool:
        source = self.local_dir(job_id) / name
        if not source.is_file():
            return False
        if source.resolve() != Path(dest).resolve():
            with atomic_path(dest) as tmp:
                shutil.copyfile(source, tmp)
        return True

    def exists(self, job_id: str, name: str) -> bool:
        return (self.local_dir(job_id) / name).is_file()

    def remove(self, job_id: str, name: str) -> None:
        try:
            (self.local_dir(job_id) / name).unlink()
        except FileNotFoundError:
            pass

    def delete_job(self, job_id: str) -> None:
        shutil.rmtree(self.local_dir(job_id), ignore_errors=True)

    def stream(self, job_id: str, name: str):
        path = self.local_dir(job_id) / name
        return (_chunks(path), path.stat().st_size) if path.is_file() else None


def _chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk


class S3Storage:
    """Objects ``<prefix>/<job id>/<name>`` in one bucket; a local ``cache_dir`` holds what
    the API needs as files (a preview's driving video)."""

    in_place = False

    def __init__(self, url: str, cache_dir: str | Path):
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise ConfigError(f"--media {url} needs boto3 (the S3 client): pip install "
                              "boto3==1.44.5, or use a shared folder") from exc
        rest = url[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ConfigError(f"--media {url}: name a bucket (s3://BUCKET[/PREFIX])")
        self.url, self.bucket, self.prefix = url, bucket, prefix.strip("/")
        self.cache_dir = Path(cache_dir)
        self.client = boto3.client("s3", config=Config(
            retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30))
        self._errors = self._error_types()

    @staticmethod
    def _error_types():
        from botocore.exceptions import BotoCoreError, ClientError

        return (BotoCoreError, ClientError)

    def _key(self, job_id: str, name: str = "") -> str:
        return "/".join(p for p in (self.prefix, job_id, name) if p) + ("" if name else "/")

    def _fail(self, what: str, exc: Exception) -> StorageUnavailable:
        return StorageUnavailable(f"the media storage {self.url} failed to {what} ({exc}) — "
                                  "check that it is reachable and the credentials allow it")

    def local_dir(self, job_id: str) -> Path:
        return self.cache_dir / job_id

    def put(self, job_id: str, name: str, source: Path) -> None:
        try:
            self.client.upload_file(str(source), self.bucket, self._key(job_id, name))
        except self._errors as exc:
            raise self._fail(f"store {name}", exc) from exc

    def fetch(self, job_id: str, name: str, dest: Path) -> bool:
        from botocore.exceptions import ClientError

        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_path(dest) as tmp:
                self.client.download_file(self.bucket, self._key(job_id, name), str(tmp))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return False
            raise self._fail(f"read {name}", exc) from exc
        except self._errors as exc:
            raise self._fail(f"read {name}", exc) from exc
        return True

    def exists(self, job_id: str, name: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(job_id, name))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return False
            raise self._fail(f"look up {name}", exc) from exc
        except self._errors as exc:
            raise self._fail(f"look up {name}", exc) from exc

    def remove(self, job_id: str, name: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(job_id, name))
        except self._errors as exc:
            raise self._fail(f"delete {name}", exc) from exc

    def delete_job(self, job_id: str) -> None:
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(job_id)):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
        except self._errors as exc:
            raise self._fail("delete a job's files", exc) from exc
        shutil.rmtree(self.local_dir(job_id), ignore_errors=True)

    def stream(self, job_id: str, name: str):
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(job_id, name))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return None
            raise self._fail(f"read {name}", exc) from exc
        except self._errors as exc:
            raise self._fail(f"read {name}", exc) from exc
        return obj["Body"].iter_chunks(1 << 20), int(obj["ContentLength"])


def open_storage(url: str | Path | None, *, default_root: Path, cache_dir: Path) -> Storage:
    """The storage a ``--media`` value names: ``s3://bucket/prefix``, else a folder
    (default: ``default_root``)."""
    if url is None or str(url) == "":
        return LocalStorage(default_root)
    text = str(url)
    if text.startswith("s3://"):
        return S3Storage(text, cache_dir)
    if "://" in text and not text.startswith("file://"):
        raise ConfigError(f"unknown --media {text!r} — give a folder all hosts reach or "
                          "s3://BUCKET/PREFIX")
    return LocalStorage(text[len("file://"):] if text.startswith("file://") else text)


def scratch_root() -> Path:
    """Where workers on an object store run jobs: ``$KINEMATE_SCRATCH`` (else /tmp)
    ``/kinemate-work-<uid>/<pid>/``, owner-only (uploads are people's photos)."""
    root = Path(os.environ.get("KINEMATE_SCRATCH") or "/tmp") / f"kinemate-work-{os.getuid()}"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(root, 0o700)
    mine = root / str(os.getpid())
    mine.mkdir(exist_ok=True, mode=0o700)
    return mine


def remove_dead_scratch() -> list[Path]:
    """Scratch folders of worker processes of this host that no longer run (killed)."""
    root = scratch_root().parent
    removed = []
    for folder in root.iterdir():
        if not folder.name.isdigit() or int(folder.name) == os.getpid():
            continue
        try:
            os.kill(int(folder.name), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        except PermissionError:
            pass
    return removed
