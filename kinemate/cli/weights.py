"""``kinemate weights``: list, download and verify published weights (only when asked)."""

from __future__ import annotations

import argparse
import json
import sys

from kinemate import hub


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "weights",
        help="list, download and verify published model weights",
        description=(
            "Published checkpoints are never downloaded implicitly: this command fetches them "
            "from their hub repositories with huggingface_hub, checks sizes and sha256 hashes "
            "recorded in kinemate, and lays them out for loading."
        ),
    )
    sub = p.add_subparsers(dest="weights_command", metavar="ACTION")
    sub.required = True

    ls = sub.add_parser("list", help="show the known weight sets and their files")
    ls.add_argument("--json", action="store_true", help="print the registry as JSON")
    ls.set_defaults(func=run_list)

    dl = sub.add_parser(
        "download",
        help="download a weight set into a folder",
        description="Download NAME into DIR (default $KINEMATE_WEIGHTS_DIR/NAME or "
        "~/.cache/kinemate/weights/NAME). Files already present and valid are skipped; an "
        "interrupted download resumes.",
    )
    dl.add_argument("name", metavar="NAME", help="weight set, e.g. magicanimate (see 'kinemate weights list')")
    dl.add_argument("--dir", help="destination folder")
    src = dl.add_mutually_exclusive_group()
    src.add_argument("--endpoint", help="hub base URL (like HF_ENDPOINT), e.g. a mirror")
    src.add_argument(
        "--from-folder", metavar="MIRROR",
        help="copy from a local mirror laid out as MIRROR/<repo_id>/<filename> instead of the hub",
    )
    dl.add_argument("--force", action="store_true", help="download again even if files are present")
    dl.set_defaults(func=run_download)

    im = sub.add_parser(
        "import",
        help="check and lay out weights downloaded by hand (e.g. DreamPose's Google Drive files)",
        description="Check FILES (tensor names and shapes against the model's networks) and "
        "copy them into DIR in the layout the model loads, recording each file's sha256 in DIR. "
        "For checkpoints published outside the hub, without hashes (see 'kinemate weights list').",
    )
    im.add_argument("name", metavar="MODEL", help="model family, e.g. dreampose")
    im.add_argument("files", nargs="+", metavar="FILES", help="the downloaded files/folders")
    im.add_argument("--dir", required=True, help="destination folder (created if needed)")
    im.set_defaults(func=run_import)

    vf = sub.add_parser("verify", help="check a downloaded folder (sizes and hashes), no download")
    vf.add_argument("name", metavar="NAME")
    vf.add_argument("--dir", help="folder to check (default as for download)")
    vf.set_defaults(func=run_verify)


def run_list(args: argparse.Namespace) -> int:
    sets = list(hub.iter_sets())
    if args.json:
        out = {
            ws.name: {
                "description": ws.description,
                "license": ws.license,
                "files": [
                    {"repo_id": f.repo_id, "filename": f.filename, "revision": f.revision,
                     "target": f.target, "size": f.size, "min_size": f.min_size,
                     "sha256": f.sha256}
                    for f in ws.files
                ],
            }
            for ws in sets
        }
        print(json.dumps(out, indent=2))
        return 0
    for ws in sets:
        pinned = sum(1 for f in ws.files if f.sha256)
        print(f"{ws.name}  (~{hub.human_size(ws.approx_bytes)}, {len(ws.files)} files, "
              f"{pinned} with pinned sha256)")
        print(f"  {ws.description}")
        if ws.license:
            print(f"  licence: {ws.license}")
        for f in ws.files:
            mark = hub.how_checked(f).replace(": hash not pinned", "")
            print(f"    {f.target:72} {hub.human_size(f.display_size):>9}  {mark}")
        for note in ws.notes:
            print(f"  note: {note}")
        print(f"  download: kinemate weights download {ws.name} --dir DIR")
    return 0


def _hash_bar(wf, total):
    if total < 64 << 20:
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"checking {wf.target.rsplit('/', 1)[-1]}",
               file=sys.stderr, leave=False)

    def update(n: int) -> None:
        bar.update(n)
        if bar.n >= bar.total:
            bar.close()

    return update


def run_download(args: argparse.Namespace) -> int:
    ws = hub.get(args.name)
    dest = hub.default_dir(ws.name) if args.dir is None else args.dir
    print(f"downloading {ws.name} (~{hub.human_size(ws.approx_bytes)}) into {dest}", file=sys.stderr)
    results = hub.download(
        ws.name, dest, from_folder=args.from_folder, endpoint=args.endpoint, force=args.force,
        echo=lambda s: print(s, file=sys.stderr), hash_progress_factory=_hash_bar,
    )
    unpinned = [r for r in results if not r.file.sha256]
    if unpinned:
        print(f"note: {len(unpinned)} file(s) have no sha256 pinned in kinemate; their size was "
              "checked, not their content.", file=sys.stderr)
    print(f"ready: {dest}")
    if ws.usage:
        print(f"use:   {ws.usage.format(dir=dest)}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from kinemate.errors import UsageError
    from kinemate.models.registry import get_family

    family = get_family(args.name)
    if family.import_files is None:
        raise UsageError(f"{family.name} weights are downloaded, not imported: run 'kinemate "
                         f"weights download {family.name} --dir DIR'")
    family.import_files(args.files, args.dir, echo=lambda s: print(s, file=sys.stderr))
    print(f"ready: {args.dir}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    ws = hub.get(args.name)
    dest = hub.default_dir(ws.name) if args.dir is None else args.dir
    results = hub.verify(ws.name, dest)
    bad = 0
    for r in results:
        if r.status == "present":
            how = "sha256 ok" if r.file.sha256 else f"{hub.how_checked(r.file)} ok (sha256 {r.sha256})"
            print(f"ok       {r.file.target}  {how}")
        else:
            bad += 1
            print(f"{r.status:8} {r.file.target}  {r.message}")
    if bad:
        print(f"{bad} of {len(results)} files missing or invalid — run 'kinemate weights download "
              f"{ws.name} --dir {dest}'.", file=sys.stderr)
        return 1
    print(f"all {len(results)} files present and valid in {dest}")
    return 0
