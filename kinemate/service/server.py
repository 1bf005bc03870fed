"""Running the service: the app under uvicorn, bound to 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import logging

from kinemate.service.config import ServiceConfig

log = logging.getLogger("kinemate.service")


def serve(config: ServiceConfig, *, host: str = "127.0.0.1", port: int = 8000,
          runner=None, log_level: str = "info") -> None:
    """Serve until interrupted. One process, one worker thread running jobs on the device."""
    import uvicorn

    from kinemate.service.app import create_app

    app = create_app(config, runner=runner)
    service_log = logging.getLogger("kinemate.service")
    service_log.setLevel(log_level.upper())
    if not service_log.handlers:  # job events with timestamps, next to uvicorn's lines
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        service_log.addHandler(handler)
        service_log.propagate = False
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=10, limit_concurrency=200,
                h11_max_incomplete_event_size=64 * 1024)
