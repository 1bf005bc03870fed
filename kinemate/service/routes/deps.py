"""Dependencies shared by the routers: the app's store, config and worker, and the caller's
API key."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from kinemate.service.config import ServiceConfig
from kinemate.service.store import JobStore, KeyRecord
from kinemate.service.worker import Worker


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_config(request: Request) -> ServiceConfig:
    return request.app.state.config


def get_worker(request: Request) -> Worker:
    return request.app.state.worker


Store = Annotated[JobStore, Depends(get_store)]
Config = Annotated[ServiceConfig, Depends(get_config)]
CurrentWorker = Annotated[Worker, Depends(get_worker)]


def current_key(
    store: Store,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> KeyRecord:
    """The key of ``Authorization: Bearer <key>`` (or ``X-API-Key``); 401 otherwise."""
    secret = x_api_key
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise HTTPException(401, "the Authorization header must be 'Bearer <API key>'",
                                headers={"WWW-Authenticate": "Bearer"})
        secret = value.strip()
    if not secret:
        raise HTTPException(401, "an API key is required: send 'Authorization: Bearer "
                            "<key>' (create one with 'kinemate serve keys create')",
                            headers={"WWW-Authenticate": "Bearer"})
    key = store.authenticate(secret)
    if key is None:
        raise HTTPException(401, "this API key is not valid (unknown or revoked) — ask the "
                            "operator for a key ('kinemate serve keys create')",
                            headers={"WWW-Authenticate": "Bearer"})
    return key


Key = Annotated[KeyRecord, Depends(current_key)]
