"""``kinemate serve``: the HTTP service (API + web page), and its API keys.

    kinemate serve [--host 127.0.0.1] [--port 8000] [--data-dir DIR] [--weights DIR]
    kinemate serve keys create [--name NAME]     # prints a new key once
    kinemate serve keys list
    kinemate serve keys revoke KEY_ID            # by id only (as in 'keys list')
    kinemate serve keys revoke --name NAME       # every active key with that exact name
    kinemate serve keys set KEY_ID [--max-active N] [--weight W] [--max-priority P]

Several machines: ``--db postgresql://...`` (the job database), ``--media DIR|s3://...``
(files every host reaches), ``--no-worker`` (this process only answers the API) and any
number of ``kinemate worker`` processes (docs/service.md, "Deployment").
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from kinemate.errors import UsageError

DEFAULT_DATA_DIR = "kinemate-data"


def _data_dir(args) -> Path:
    return Path(getattr(args, "data_dir", None) or os.environ.get("KINEMATE_DATA_DIR")
                or DEFAULT_DATA_DIR)


DB_HELP = ("job database: postgresql://USER:PASSWORD@HOST:PORT/DB for several machines, or a "
           "SQLite file (default: $KINEMATE_DB, else DATA_DIR/kinemate.db)")
MEDIA_HELP = ("where uploads and results live: a folder every host reaches, or "
              "s3://BUCKET/PREFIX (boto3; endpoint and credentials from AWS_ENDPOINT_URL, "
              "AWS_ACCESS_KEY_ID, ...); default: $KINEMATE_MEDIA, else DATA_DIR/jobs")


def _db(args) -> str | None:
    return getattr(args, "db", None) or os.environ.get("KINEMATE_DB") or None


def _media(args) -> str | None:
    return getattr(args, "media", None) or os.environ.get("KINEMATE_MEDIA") or None


def parse_models(values: list[str] | None) -> tuple[tuple[str, str | None], ...]:
    """``--model NAME=FOLDER`` values (``NAME=`` alone: the bundled model)."""
    import re

    out = []
    for value in values or ():
        name, sep, folder = value.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
            raise UsageError(f"--model {value!r}: write NAME=FOLDER (NAME: letters, digits, "
                             "'.', '_', '-')")
        if folder and not Path(folder).is_dir():
            raise UsageError(f"--model {value!r}: {folder} is not a folder — give the model "
                             "folder")
        if name in dict(out):
            raise UsageError(f"--model {name} is given twice")
        out.append((name, folder or None))
    return tuple(out)


def add_pool_arguments(p) -> None:
    """Options shared by ``serve`` and ``worker``."""
    p.add_argument("--db", default=argparse.SUPPRESS, help=DB_HELP)
    p.add_argument("--media", default=argparse.SUPPRESS, help=MEDIA_HELP)
    p.add_argument("--model", action="append", dest="models", metavar="NAME=FOLDER",
                   help="a model the worker serves by name (repeat for several; a job picks one "
                        "with its 'model' field)")
    p.add_argument("--cache-gb", type=float, default=None,
                   help="memory for loaded models (their weights) a worker keeps; the least "
                        "recently used is unloaded beyond it (default 8)")
    p.add_argument("--lease-seconds", type=float, default=None,
                   help="a running job whose worker is silent this long runs again elsewhere "
                        "(default 20)")
    p.add_argument("--job-time-limit", type=float, default=None, metavar="S",
                   help="seconds one run of a job may take; it fails beyond (default: none)")


def pool_config(args) -> dict:
    """ServiceConfig fields from :func:`add_pool_arguments`."""
    out: dict = {"db_url": _db(args), "media_url": _media(args),
                 "models": parse_models(getattr(args, "models", None))}
    if getattr(args, "cache_gb", None) is not None:
        if args.cache_gb < 0:
            raise UsageError("--cache-gb must be 0 or more")
        out["model_cache_bytes"] = int(args.cache_gb * 2**30)
    if getattr(args, "lease_seconds", None) is not None:
        if not 1 <= args.lease_seconds <= 3600:
            raise UsageError("--lease-seconds must be between 1 and 3600")
        out["lease_seconds"] = args.lease_seconds
    if getattr(args, "job_time_limit", None) is not None:
        if args.job_time_limit <= 0:
            raise UsageError("--job-time-limit must be positive")
        out["job_time_limit"] = args.job_time_limit
    return out


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="run the HTTP service (API, web page) or manage its API keys",
        description="Run the HTTP service: a JSON API for animation jobs, a web page at /, "
                    "API reference at /reference. Jobs are kept in DATA_DIR (SQLite + files) and "
                    "survive restarts. Create an API key first: 'kinemate serve keys create'.")
    data_help = ("folder with the job database, uploads and results (default: "
                 f"$KINEMATE_DATA_DIR or ./{DEFAULT_DATA_DIR})")
    p.add_argument("--data-dir", help=data_help)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; use "
                        "0.0.0.0 only behind a TLS-terminating proxy)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--weights", help="model folder (MagicAnimate release layout or kinemate "
                                     "format; default: the bundled kinemate-tiny model)")
    p.add_argument("--preset", default=None,
                   help="model preset (text2video-zero: official (default) or diffusers-docs)")
    p.add_argument("--device", default="cpu", help="torch device for the worker (cpu, cuda, "
                                                   "cuda:1, ...)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="model precision (default float32; float16 on CUDA is faster)")
    p.add_argument("--max-jobs-per-key", type=int, default=None,
                   help="queued + running jobs one key may have (default 4)")
    p.add_argument("--max-upload-mb", type=float, default=None,
                   help="largest request body in MiB (default 64)")
    p.add_argument("--header-timeout", type=float, default=None, metavar="S",
                   help="close a connection whose request headers are not complete S seconds "
                        "after it opened or after its previous response (default 10)")
    p.add_argument("--body-timeout", type=float, default=None, metavar="S",
                   help="close a connection whose request body pauses for S seconds "
                        "(default 30)")
    p.add_argument("--max-connections", type=int, default=None, metavar="N",
                   help="open connections at most (default 200); at the limit the oldest one "
                        "that has sent no request is closed")
    add_pool_arguments(p)
    p.add_argument("--no-worker", action="store_true",
                   help="run no worker in this process: only the API (workers run as "
                        "'kinemate worker')")
    p.set_defaults(func=run)

    keys = p.add_subparsers(dest="serve_command", title="API keys", metavar="keys ACTION")
    k = keys.add_parser("keys", help="create, list or revoke API keys")
    ks = k.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    for name, helptext in (("create", "create a key and print it (shown only once)"),
                           ("list", "list keys (ids and names, never the secrets)"),
                           ("revoke", "revoke a key by its id, or with --name every key of "
                                      "that name"),
                           ("set", "change a key's quota: active jobs, fair-share weight, "
                                   "highest priority")):
        kp = ks.add_parser(name, help=helptext)
        kp.add_argument("--data-dir", default=argparse.SUPPRESS, help=data_help)
        kp.add_argument("--db", default=argparse.SUPPRESS, help=DB_HELP)
        if name in ("create", "set"):
            kp.add_argument("--max-active", type=int, default=None,
                            help="queued + running jobs this key may have (default: the "
                                 "server's --max-jobs-per-key)")
            kp.add_argument("--weight", type=float, default=None,
                            help="its share of the workers against other keys (default 1)")
            kp.add_argument("--max-priority", type=int, default=None,
                            help="the highest job priority (0-9) it may ask for (default 0)")
        if name == "set":
            kp.add_argument("key", help="the key's id, as in 'keys list'")
        if name == "create":
            kp.add_argument("--name", default="", help="a label for the key (who uses it)")
        if name == "revoke":
            kp.add_argument("key", nargs="?", help="the key's id, as in 'keys list' (an id "
                                                   "only: names need --name)")
            kp.add_argument("--name", dest="by_name", default=None,
                            help="revoke every active key with exactly this name instead")
        kp.set_defaults(func=run_keys)


def run_keys(args) -> int:
    from kinemate.service.config import ServiceConfig
    from kinemate.service.store import open_store, redact_url

    config = ServiceConfig(data_dir=_data_dir(args), db_url=_db(args))
    store = open_store(config.db)
    if args.keys_command == "create":
        name = (args.name or "").strip()[:100]
        record, secret = store.create_key(
            name or "key", max_active=args.max_active,
            weight=1.0 if args.weight is None else args.weight,
            max_priority=args.max_priority or 0)
        print(secret)
        print(f"created key {record.id} ({record.name}) in {redact_url(config.db)} — store it "
              "now, it is not shown again", file=sys.stderr)
    elif args.keys_command == "list":
        for key in store.list_keys():
            state = "active" if key.active else "revoked"
            quota = (f"max_active={key.max_active or '-'} weight={key.weight:g} "
                     f"max_priority={key.max_priority}")
            print(f"{key.id}\t{state}\t{key.name}\t{quota}")
    elif args.keys_command == "set":
        record = store.set_key_quota(args.key, max_active=args.max_active, weight=args.weight,
                                     max_priority=args.max_priority)
        if record is None:
            raise UsageError(f"no key has the id {args.key!r} — see 'kinemate serve keys list'")
        print(f"key {record.id} ({record.name}): max_active={record.max_active or '-'} "
              f"weight={record.weight:g} max_priority={record.max_priority}")
    elif args.keys_command == "revoke":
        _revoke(store, args.key, args.by_name)
    return 0


def _revoke(store, key_id: str | None, name: str | None) -> None:
    """Revoke by id, or every key of a name; never a name given as an id (say so instead)."""
    if (key_id is None) == (name is None):
        raise UsageError("give a key id (kinemate serve keys revoke ID) or a name "
                         "(kinemate serve keys revoke --name NAME), not both or neither")
    if key_id is not None:
        record = store.revoke_key(key_id)
        revoked = [record] if record else []
        if not revoked:
            named = [k for k in store.list_keys() if k.name == key_id and k.active]
            hint = (f"; {len(named)} active key(s) are named {key_id!r}: to revoke them by "
                    f"name use --name {key_id!r}" if named else "")
            raise UsageError(f"no active key has the id {key_id!r}{hint} — see "
                             "'kinemate serve keys list'")
    else:
        revoked = store.revoke_keys_named(name)
        if not revoked:
            raise UsageError(f"no active key is named {name!r} — see 'kinemate serve keys list'")
    for record in revoked:
        print(f"revoked key {record.id} ({record.name})")


def run(args) -> int:
    from kinemate.service import server
    from kinemate.service.config import Limits, ServiceConfig

    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port} is not a TCP port — use 1-65535")
    limits = Limits()
    if args.max_jobs_per_key is not None:
        if args.max_jobs_per_key < 1:
            raise UsageError("--max-jobs-per-key must be at least 1")
        limits = dataclasses.replace(limits, max_active_jobs_per_key=args.max_jobs_per_key)
    if args.max_upload_mb is not None:
        if args.max_upload_mb <= 0:
            raise UsageError("--max-upload-mb must be positive")
        limits = dataclasses.replace(limits, max_request_bytes=int(args.max_upload_mb * 2**20))
    guards = {"header_timeout": args.header_timeout, "body_timeout": args.body_timeout}
    for name, value in guards.items():
        if value is not None and not 0 < value <= 3600:
            raise UsageError(f"--{name.replace('_', '-')} must be between 0 and 3600 seconds "
                             f"(got {value:g})")
    if args.max_connections is not None and args.max_connections < 2:
        raise UsageError("--max-connections must be at least 2")
    weights = Path(args.weights) if args.weights else None
    if weights is not None and not weights.is_dir():
        raise UsageError(f"--weights {weights} is not a folder — give the model folder")
    config = ServiceConfig(data_dir=_data_dir(args), weights=weights, device=args.device,
                           dtype=args.dtype, limits=limits, preset=args.preset,
                           start_worker=not args.no_worker,
                           **pool_config(args))
    print(f"kinemate: serving on http://{args.host}:{args.port}/ (API reference at /reference), data in "
          f"{config.data_dir}", file=sys.stderr)
    server.serve(config, host=args.host, port=args.port,
                 log_level="debug" if getattr(args, "verbose", False) else "info",
                 header_timeout=args.header_timeout or server.HEADER_TIMEOUT,
                 body_timeout=args.body_timeout or server.BODY_TIMEOUT,
                 max_connections=args.max_connections or server.MAX_CONNECTIONS)
    return 0
