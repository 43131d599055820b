"""`sitegw import`: a surveyor's file sent to a running gateway's API, its refusal printed row by row."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def import_survey(args: argparse.Namespace) -> int:
    """POST the file to the gateway: 0 imported, 1 refused (every row and column printed), 2 unusable request."""
    import base64
    import os

    import httpx

    token = os.environ.get(args.token_env)
    if not token:
        print(
            f"error: environment variable {args.token_env} is not set (an API token of role officer)", file=sys.stderr
        )
        return 2
    try:
        data = args.file.read_bytes()
    except OSError as err:
        print(f"error: {args.file}: {err.strerror}", file=sys.stderr)
        return 2
    body: dict[str, Any] = {"filename": args.file.name, "content_b64": base64.b64encode(data).decode()}
    if args.quantity:
        body["quantity"] = args.quantity
    try:
        r = httpx.post(
            f"{args.url.rstrip('/')}/api/surveys", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
    except httpx.HTTPError as err:
        print(f"error: {args.url}: {err}", file=sys.stderr)
        return 2
    if r.status_code == 200:
        res = r.json()
        print(f"imported {res['rows']} row(s) for {', '.join(res['points'])} (import #{res['import_id']})")
        if res["baselines_set"]:
            print(f"baseline 0 set for {', '.join(res['baselines_set'])} (cumulative values)")
        for sheet, why in (res.get("sheets_skipped") or {}).items():
            print(f"worksheet {sheet!r} not read: {why}")
        return 0
    detail: dict[str, Any] = (
        r.json() if r.headers.get("content-type", "").startswith("application/json") else {"detail": r.text}
    )
    print(f"refused ({r.status_code}): nothing was imported", file=sys.stderr)
    for e in detail.get("errors") or []:
        where = f"sheet {e['sheet']!r}, " if e.get("sheet") else ""
        where += f"row {e['row']}, column {e['column']}: " if e.get("row") else ""
        print(f"  {where}{e['message']}", file=sys.stderr)
    if not detail.get("errors"):
        print(f"  {detail.get('detail')}", file=sys.stderr)
    return 1 if r.status_code == 422 else 2
