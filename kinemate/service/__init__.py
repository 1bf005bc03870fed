"""kinemate.service — HTTP API, persistent job store, worker and web page.

``create_app(config)`` builds the FastAPI app; ``serve(config, host=..., port=...)`` runs it
under uvicorn; ``SQLiteJobStore`` is the default :class:`JobStore`. See docs/service.md.
"""

from kinemate.service.config import Limits, ServiceConfig
from kinemate.service.store import Job, JobStore, KeyRecord, SQLiteJobStore


def create_app(*args, **kwargs):
    from kinemate.service.app import create_app as _create_app

    return _create_app(*args, **kwargs)


def serve(*args, **kwargs):
    from kinemate.service.server import serve as _serve

    return _serve(*args, **kwargs)


__all__ = ["Job", "JobStore", "KeyRecord", "Limits", "SQLiteJobStore", "ServiceConfig",
           "create_app", "serve"]
