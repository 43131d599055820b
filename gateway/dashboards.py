"""`sitegw dashboards push`: create or update the SiteGW folder and every dashboard of dashboards/ in Grafana."""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboards"
# the uid of the provisioned data source (dashboards/provisioning/datasources/sitegw.yaml); every panel refers to it
DATASOURCE_UID = "sitegw-influxdb"
FOLDER_UID = "sitegw"
PUSH_MESSAGE = "sitegw dashboards push"


class _Folders(Protocol):
    def get_folder(self, uid: str) -> dict[str, Any]: ...
    def create_folder(self, title: str, uid: str | None = None) -> dict[str, Any]: ...
    def update_folder(self, uid: str, title: str | None = None, overwrite: bool = False) -> dict[str, Any]: ...


class _Dashboards(Protocol):
    def get_dashboard(self, dashboard_uid: str) -> dict[str, Any]: ...
    def update_dashboard(self, dashboard: dict[str, Any]) -> dict[str, Any]: ...


class GrafanaLike(Protocol):
    """The part of grafana-client's GrafanaApi that `push` uses (grafana-client itself is untyped)."""

    folder: _Folders
    dashboard: _Dashboards


@dataclass(frozen=True)
class Pushed:
    """What happened to one dashboard."""

    uid: str
    title: str
    action: str  # created | updated | unchanged (pushed again: only Grafana's version number moves)
    version: int
    url: str


def load_dashboards(folder: Path = DASHBOARD_DIR) -> list[dict[str, Any]]:
    """Every `*.json` dashboard of `folder`, sorted by name; a missing uid or title, or a duplicate uid, is an error."""
    out: list[dict[str, Any]] = []
    seen: dict[str, Path] = {}
    for path in sorted(folder.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or not doc.get("uid") or not doc.get("title"):
            raise ValueError(f"{path}: not a dashboard (needs a uid and a title)")
        if doc["uid"] in seen:
            raise ValueError(f"{path}: uid {doc['uid']!r} is also used by {seen[doc['uid']]}")
        seen[doc["uid"]] = path
        out.append(doc)
    if not out:
        raise ValueError(f"{folder}: no *.json dashboards")
    return out


def with_datasource(node: Any, uid: str) -> Any:
    """A copy of `node` where every reference to the SiteGW InfluxDB data source points at `uid` instead."""
    if isinstance(node, dict):
        out = {k: with_datasource(v, uid) for k, v in node.items()}
        if out.get("type") == "influxdb" and out.get("uid") == DATASOURCE_UID:
            out["uid"] = uid
        return out
    if isinstance(node, list):
        return [with_datasource(v, uid) for v in node]
    return node


def _comparable(dash: dict[str, Any]) -> dict[str, Any]:
    # Grafana owns id and version; everything else is ours
    return {k: v for k, v in dash.items() if k not in ("id", "version")}


def _status(err: Exception) -> int | None:
    return getattr(err, "status_code", None)


def push(
    api: GrafanaLike,
    dashboards: list[dict[str, Any]],
    folder_title: str = "SiteGW",
    folder_uid: str = FOLDER_UID,
    datasource_uid: str | None = None,
) -> tuple[str, list[Pushed]]:
    """Create or rename the folder, then save every dashboard into it by uid with overwrite. Idempotent."""
    from grafana_client.client import GrafanaClientError

    try:
        folder = api.folder.get_folder(folder_uid)
    except GrafanaClientError as err:
        if _status(err) != 404:
            raise
        api.folder.create_folder(folder_title, uid=folder_uid)
        folder_action = "created"
    else:
        if folder.get("title") != folder_title:
            api.folder.update_folder(folder_uid, title=folder_title, overwrite=True)
            folder_action = f"renamed from {folder.get('title')!r}"
        else:
            folder_action = "exists"
    done: list[Pushed] = []
    for dash in dashboards:
        body = copy.deepcopy(dash)
        if datasource_uid:
            body = with_datasource(body, datasource_uid)
        body["id"] = None  # save by uid: a numeric id from another Grafana would address the wrong dashboard
        body.pop("version", None)
        try:
            existing = api.dashboard.get_dashboard(body["uid"])
        except GrafanaClientError as err:
            if _status(err) != 404:
                raise
            action = "created"
        else:
            same = _comparable(existing.get("dashboard", {})) == _comparable(body)
            in_folder = existing.get("meta", {}).get("folderUid") == folder_uid
            action = "unchanged" if same and in_folder else "updated"
        saved = api.dashboard.update_dashboard(
            {"dashboard": body, "folderUid": folder_uid, "overwrite": True, "message": PUSH_MESSAGE}
        )
        done.append(Pushed(body["uid"], body["title"], action, int(saved.get("version", 0)), str(saved.get("url", ""))))
    return f"folder {folder_uid} {folder_title!r}: {folder_action}", done


def add_cli(sub: Any) -> None:
    """The `dashboards` sub-command of `sitegw` (sub is the parent's sub-parsers object)."""
    p = sub.add_parser("dashboards", help="Grafana dashboards (see dashboards/README.md)")
    dsub = p.add_subparsers(dest="dashboards_cmd", required=True)
    pp = dsub.add_parser("push", help="create or update the SiteGW folder and dashboards in a Grafana, by uid")
    pp.add_argument("--url", required=True, help="Grafana base URL, e.g. http://grafana.site.lan:3000")
    pp.add_argument(
        "--token-env",
        default="GRAFANA_TOKEN",
        help="environment variable holding a service-account token (default GRAFANA_TOKEN)",
    )
    pp.add_argument("--folder", default="SiteGW", help="folder title (folder uid is always 'sitegw')")
    pp.add_argument(
        "--datasource-uid",
        default=None,
        help=f"uid of the InfluxDB data source in that Grafana, when it is not {DATASOURCE_UID!r}",
    )
    pp.add_argument("--dir", type=Path, default=DASHBOARD_DIR, help="folder of dashboard JSON files")
    pp.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout in seconds")


def run_cli(args: argparse.Namespace) -> int:
    """Run `sitegw dashboards push`; exit 0 on success, 1 when Grafana refuses, 2 for a usage problem."""
    token = os.environ.get(args.token_env, "")
    if not token:
        print(f"error: environment variable {args.token_env} is not set (a Grafana token)", file=sys.stderr)
        return 2
    try:
        dashboards = load_dashboards(args.dir)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        from grafana_client.api import GrafanaApi
        from grafana_client.client import GrafanaException
    except ImportError:
        print("error: grafana-client is not installed: pip install 'sitegw[grafana]'", file=sys.stderr)
        return 2
    api = GrafanaApi.from_url(args.url, credential=token, timeout=args.timeout)
    try:
        folder, done = push(api, dashboards, args.folder, FOLDER_UID, args.datasource_uid)
    except GrafanaException as err:
        # the message is Grafana's answer; the token is never part of it
        print(f"error: Grafana at {args.url}: {err}", file=sys.stderr)
        return 1
    print(folder)
    for d in done:
        print(f"dashboard {d.uid} {d.title!r}: {d.action}, version {d.version}" + (f" ({d.url})" if d.url else ""))
    counts = {a: sum(d.action == a for d in done) for a in ("created", "updated", "unchanged")}
    print(f"pushed {len(done)} dashboard(s) to {args.url}: " + ", ".join(f"{n} {a}" for a, n in counts.items()))
    return 0
