"""Service configuration: one place that defines every default and limit.

The limits guard the server against inputs that would exhaust memory, disk or the
device. Every limit is enforced before a job is accepted (a video's from its container and
first frame); the worker decodes a video's every frame as the job's first step, and a video
that does not hold what its container declared fails the job there, before any sampling.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

CONTROL_KINDS = ("auto", "densepose", "pose")
FIT_MODES = ("crop", "letterbox")


@dataclasses.dataclass(frozen=True)
class Limits:
    """What a request may contain. All checked before a job is accepted."""

    max_request_bytes: int = 64 * 1024 * 1024  # whole multipart body, streamed with a cap
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    max_image_side: int = 8192
    max_video_bytes: int = 48 * 1024 * 1024
    max_video_seconds: float = 60.0
    max_video_frames: int = 1500
    max_video_side: int = 2048
    max_pose_json_bytes: int = 8 * 1024 * 1024
    max_output_side: int = 1024  # each side of the requested output size
    min_output_side: int = 32
    max_steps: int = 100
    max_guidance: float = 30.0
    max_active_jobs_per_key: int = 4  # queued + running jobs of one API key
    max_concurrent_checks: int = 2  # uploads decoded at the same time (CPU guard)
    max_name_chars: int = 200  # display names kept from client file names


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """Where the service keeps its state and how it runs jobs.

    ``data_dir`` holds ``kinemate.db`` (SQLite, WAL) and ``jobs/<job id>/`` folders with
    the uploads and results; nothing else is written.
    """

    data_dir: Path = Path("kinemate-data")
    weights: Path | None = None  # None: the bundled kinemate-tiny model
    device: str = "cpu"
    dtype: str = "float32"
    preset: str | None = None  # a family's named parameter set (text2video-zero)
    limits: Limits = dataclasses.field(default_factory=Limits)
    lease_seconds: float = 20.0  # a running job whose worker misses this is requeued
    max_attempts: int = 3  # a job that kills its worker (out of memory) this often fails
    max_interruptions: int = 10  # a job whose server stops this often while it runs fails
    poll_seconds: float = 0.5  # how often an idle worker looks for queued jobs
    watermark_default: bool = True
    start_worker: bool = True
    # -- several workers on several hosts (docs/service.md, "Deployment") ----------------
    db_url: str | None = None  # postgresql://... or a SQLite path; None: data_dir/kinemate.db
    media_url: str | None = None  # a shared folder or s3://bucket/prefix; None: data_dir/jobs
    models: tuple[tuple[str, str | None], ...] = ()  # (name, weights folder) a worker serves
    model_cache_bytes: int = 8 * 2**30  # loaded models a worker keeps, by their weights' size
    job_time_limit: float | None = None  # seconds one run of a job may take (None: no limit)
    worker_seen_seconds: float = 10.0  # how often a worker refreshes its row in `workers`

    @property
    def db_path(self) -> Path:
        return Path(self.data_dir) / "kinemate.db"

    @property
    def jobs_dir(self) -> Path:
        """Job folders: the ``media_url`` folder, else ``data_dir/jobs`` (with an object
        store, the local cache of what the API reads as files)."""
        if self.media_url and "://" not in self.media_url:
            return Path(self.media_url)
        return Path(self.data_dir) / "jobs"

    @property
    def db(self) -> str:
        return self.db_url or str(self.db_path)
