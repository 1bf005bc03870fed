"""The service as a pool on one PostgreSQL: throughput and queue latency of 1 and 3 worker
processes, and a run with failures (one worker SIGKILLed mid-job, the database restarted
once) that must still run every job exactly once with the frames of the 1-worker run.

    .venv/bin/python benchmarks/bench_cluster.py [--jobs 50] [--workers 3] [--steps 1]

A real PostgreSQL server (Debian's postgresql binaries, fsync on) and a real API process
(`kinemate serve --no-worker`) on loopback, media in a shared folder, `kinemate worker`
processes with one torch thread each. Jobs: the tiny golden MagicAnimate weights (or the
bundled model), 4 frames at 64x64, job i with seed i and no watermark (so the frames of job
i can be compared between runs). Prints one line per measure and exits non-zero when a
check fails.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "service"))

from pg_helpers import PostgresServer, pg_bin_dir  # noqa: E402
from service_helpers import BUNDLED_MODEL, Server, WorkerProcess, prepare_model  # noqa: E402


def make_inputs(tmp: Path) -> tuple[bytes, bytes]:
    from kinemate.io import fit_image, open_video, read_image, write_image, write_video

    demo = REPO.parent / "shared" / "reference" / "magicanimate" / "demo_inputs"
    write_image(tmp / "ref.png", fit_image(read_image(demo / "monalisa.png"), (96, 96), "crop"))
    frames = []
    with open_video(demo / "running.mp4") as reader:
        for i, frame in enumerate(reader):
            if i % 2 == 0:
                frames.append(fit_image(frame, (64, 64), "crop"))
            if len(frames) == 4:
                break
    write_video(tmp / "drv.mp4", frames, 25)
    return (tmp / "ref.png").read_bytes(), (tmp / "drv.mp4").read_bytes()


def frames_digest(path: Path) -> str:
    from kinemate.io import read_video

    return hashlib.sha256(read_video(path)[0].tobytes()).hexdigest()


def run_phase(name: str, *, postgres: PostgresServer, weights: Path, root: Path, ref: bytes,
              drv: bytes, jobs: int, workers: int, steps: int, kill: bool = False,
              restart_db: bool = False) -> dict:
    from kinemate.service.store import open_store

    db = postgres.create_database()
    store = open_store(db)
    media = root / f"{name}-media"
    api = Server(root / f"{name}-api", weights, ["--no-worker", "--db", db, "--media",
                                                 str(media), "--max-upload-mb", "8"])
    pool = [WorkerProcess(db, str(media), weights, root, ["--lease-seconds", "5"],
                          name=f"{name}-w{i}").start() for i in range(workers)]
    api.start(until=("none",))
    for w in pool:
        w.wait_ready(store, timeout=300)
    key = store.create_key(name, max_active=jobs + 10)[1]
    events: list[str] = []

    t0 = time.monotonic()
    ids = []
    for i in range(jobs):
        res = api.client.submit(key, ref, drv, params={"steps": str(steps), "seed": str(i),
                                                      "watermark": "false"})
        assert res.status == 201, res.body
        ids.append(res.json()["id"])
    submitted = time.monotonic() - t0

    def chaos() -> None:
        killed = restarted = False
        while not (killed or not kill) or not (restarted or not restart_db):
            done = store.job_counts()["succeeded"]
            if kill and not killed and done >= jobs // 5:
                running = [store.get_job(j) for j in ids]
                busy = [j for j in running if j.state == "running"
                        and j.progress.get("stage") not in (None, "starting")]
                if busy:
                    pid = int(busy[0].worker.split(":")[1])
                    victim = next(w for w in pool if w.pid == pid)
                    victim.kill()
                    events.append(f"SIGKILL worker pid {pid} while it ran job {busy[0].id[:8]} "
                                  f"(after {done} jobs done)")
                    killed = True
            if restart_db and not restarted and done >= jobs // 2:
                down = time.monotonic()
                postgres.restart(down_s=1.0)
                events.append(f"PostgreSQL restarted (down {time.monotonic() - down:.1f} s, "
                              f"after {done} jobs done)")
                restarted = True
            time.sleep(0.05)

    chaos_thread = None
    if kill or restart_db:
        chaos_thread = threading.Thread(target=chaos, daemon=True)
        chaos_thread.start()
    deadline = time.monotonic() + 60 * 30
    while time.monotonic() < deadline:
        try:
            counts = store.job_counts()
        except Exception:  # noqa: BLE001 - the database is restarting
            time.sleep(0.2)
            continue
        if counts["queued"] == 0 and counts["running"] == 0:
            break
        time.sleep(0.1)
    elapsed = time.monotonic() - t0
    if chaos_thread is not None:
        chaos_thread.join(30)

    done = [store.get_job(j) for j in ids]
    latency = sorted(j.started_at - j.created_at for j in done if j.started_at)
    digests = {}
    for i, job in enumerate(done):
        if job.state == "succeeded":
            digests[i] = frames_digest(media / job.id / job.result["file"])
    logs = "".join(w.log_path.read_text(errors="replace") for w in pool)  # whole logs
    for w in pool:
        w.stop()
    api.stop()
    published = {j: len(re.findall(rf"job {j}: done", logs)) for j in ids}
    return {"name": name, "workers": workers, "jobs": jobs, "elapsed": elapsed,
            "submitted": submitted, "states": {j.id: j.state for j in done},
            "fences": {j.id: j.fence for j in done}, "latency": latency, "digests": digests,
            "published": published, "events": events,
            "interrupted": sum(j.interruptions for j in done)}


def report(r: dict) -> None:
    lat = r["latency"]
    q = statistics.quantiles(lat, n=20) if len(lat) >= 2 else lat * 2
    print(f"{r['name']}: {r['workers']} worker(s), {r['jobs']} jobs in {r['elapsed']:.1f} s "
          f"= {r['jobs'] / r['elapsed']:.2f} jobs/s (all submitted in {r['submitted']:.1f} s); "
          f"queue latency median {statistics.median(lat):.1f} s, p95 {q[-1]:.1f} s, "
          f"max {max(lat):.1f} s; runs interrupted {r['interrupted']}")
    for e in r["events"]:
        print(f"  {e}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--weights", type=Path)
    args = ap.parse_args()
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        print("needs PostgreSQL's server binaries (apt-get install postgresql)")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        weights = args.weights or prepare_model(root) or BUNDLED_MODEL
        ref, drv = make_inputs(root)
        postgres = PostgresServer(bin_dir, fsync=True).start()
        try:
            common = dict(postgres=postgres, weights=weights, root=root, ref=ref, drv=drv,
                          jobs=args.jobs, steps=args.steps)
            one = run_phase("one", workers=1, **common)
            report(one)
            many = run_phase("pool", workers=args.workers, **common)
            report(many)
            chaos = run_phase("chaos", workers=args.workers, kill=True, restart_db=True,
                              **common)
            report(chaos)
        finally:
            postgres.cleanup()
    failures = []
    for r in (one, many, chaos):
        bad = {j: s for j, s in r["states"].items() if s != "succeeded"}
        if bad:
            failures.append(f"{r['name']}: jobs not succeeded: {bad}")
        twice = {j: n for j, n in r["published"].items() if n != 1}
        if twice:
            failures.append(f"{r['name']}: jobs not published exactly once: {twice}")
        differ = [i for i, d in r["digests"].items() if d != one["digests"].get(i)]
        if differ:
            failures.append(f"{r['name']}: frames differ from the 1-worker run for jobs {differ}")
    print(f"speed-up of {args.workers} workers over 1: "
          f"{one['elapsed'] / many['elapsed']:.2f}x (clean), "
          f"{one['elapsed'] / chaos['elapsed']:.2f}x (with a SIGKILL and a database restart)")
    print(f"runs per job in the failure run: "
          f"{sorted(set(chaos['fences'].values()))}; every job published once: "
          f"{all(n == 1 for n in chaos['published'].values())}; frames equal to the 1-worker "
          f"run: {all(chaos['digests'].get(i) == d for i, d in one['digests'].items())}")
    for f in failures:
        print("FAILED:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
