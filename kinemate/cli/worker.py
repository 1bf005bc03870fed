"""``kinemate worker``: a worker process of a service pool.

    kinemate worker --db postgresql://kinemate@db/kinemate --media /mnt/kinemate-jobs \\
                    --device cuda:0 [--weights DIR] [--model NAME=DIR ...] [--metrics-port 9400]

Any number of workers on any number of hosts take jobs from one job database (claims with
leases, fenced results) and read and write files on one media storage; ``kinemate serve
--no-worker`` answers the API. SIGTERM or Ctrl-C hands the running job back to the queue.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

from kinemate.cli.serve import _data_dir, add_pool_arguments, pool_config
from kinemate.errors import UsageError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "worker", help="run a worker of a service pool (jobs from --db, files on --media)",
        description="Take jobs from the service's job database and run them on one device, "
                    "until stopped (SIGTERM/Ctrl-C hands the running job back). Start one per "
                    "GPU, on any number of hosts, all with the same --db and --media.")
    p.add_argument("--data-dir", help="folder for a SQLite database and job files when --db "
                                      "and --media are not given (one machine)")
    p.add_argument("--weights", help="the default model folder (default: the bundled "
                                     "kinemate-tiny model, or the first --model)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="model precision (default float32; float16 on CUDA is faster)")
    p.add_argument("--poll-seconds", type=float, default=None,
                   help="how often an idle worker looks for a job (default 0.5)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve this worker's Prometheus metrics (step time, GPU memory, ...) "
                        "on this port")
    p.add_argument("--metrics-host", default="127.0.0.1",
                   help="address of the metrics endpoint (default 127.0.0.1)")
    add_pool_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from kinemate.service.config import ServiceConfig
    from kinemate.service.runner import PipelineRunner
    from kinemate.service.storage import open_storage
    from kinemate.service.store import open_store, redact_url
    from kinemate.service.worker import Worker

    weights = Path(args.weights) if args.weights else None
    if weights is not None and not weights.is_dir():
        raise UsageError(f"--weights {weights} is not a folder — give the model folder")
    extra = {}
    if args.poll_seconds is not None:
        if not 0.01 <= args.poll_seconds <= 60:
            raise UsageError("--poll-seconds must be between 0.01 and 60")
        extra["poll_seconds"] = args.poll_seconds
    config = ServiceConfig(data_dir=_data_dir(args), weights=weights, device=args.device,
                           dtype=args.dtype, **extra, **pool_config(args))
    store = open_store(config.db)
    storage = open_storage(config.media_url, default_root=config.jobs_dir,
                           cache_dir=config.jobs_dir)
    runner = PipelineRunner(config)
    worker = Worker(store, config, runner, prepare=runner.load, storage=storage)
    log = logging.getLogger("kinemate.service")
    log.setLevel(logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s worker: %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        from kinemate.service.metrics import REGISTRY

        start_http_server(args.metrics_port, addr=args.metrics_host, registry=REGISTRY)

    def stop(signum, _frame) -> None:
        log.info("worker %s: stopping (signal %d)", worker.id, signum)
        worker.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"kinemate worker {worker.id}: jobs from {redact_url(config.db)}, files on "
          f"{storage.url}, device {config.device}", file=sys.stderr)
    worker.run_forever()
    if worker.state == "error":
        print(f"kinemate: error: the worker cannot load its model: {worker.error}",
              file=sys.stderr)
        return 1
    return 0
