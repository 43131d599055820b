"""The hub's YAML config: NATS, PostgreSQL, HTTP, the region tree (province → city → county → project → site), users."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from telemetry import yamltext
from telemetry.secrets import nats_login
from telemetry.zones import iana_zone

Env = Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")]
Code = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
SiteId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]  # a NATS subject token: no dots, no wildcards
Level = Literal["province", "city", "county"]
_BELOW: dict[str, str] = {"province": "city", "city": "county"}


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Project(_Base):
    """A construction project (工程项目) and the site gateways that report for it."""

    id: Code
    name: str = Field(min_length=1)
    company: str | None = None  # the contractor group (集团 / 公司) whose safety department watches it
    sites: list[SiteId] = Field(min_length=1)


class Region(_Base):
    code: Code  # an administrative division code (e.g. 320102) or any id unique in the tree
    name: str = Field(min_length=1)
    level: Level
    children: list[Region] = []
    projects: list[Project] = []  # at county level

    @model_validator(mode="after")
    def _shape(self) -> Region:
        for c in self.children:
            if c.level != _BELOW.get(self.level):
                below = _BELOW.get(self.level)
                want = f"a {below}" if below else "no region (projects only)"
                raise ValueError(f"{self.code}: under a {self.level} comes {want}, not the {c.level} {c.code}")
        if self.projects and self.level != "county":
            raise ValueError(f"{self.code}: projects belong to a county, not a {self.level}")
        return self


class HubUser(_Base):
    """A login of the people above the sites, scoped to a region of the tree or to one contractor group."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    password_env: Env
    role: Literal["viewer", "supervisor"] = "viewer"  # supervisor: may also send supervision notices (督办通知)
    region: Code | None = None
    company: str | None = None
    display_name: str = ""

    @model_validator(mode="after")
    def _scope(self) -> HubUser:
        if (self.region is None) == (self.company is None):
            raise ValueError(f"user {self.name}: give exactly one scope, region (a code of the tree) or company")
        return self


class NatsSection(_Base):
    servers: list[Annotated[str, Field(pattern=r"^(nats|tls)://[^\s/]+$")]] = Field(min_length=1)
    user: str | None = None
    password_env: Env | None = None
    stream: str = "SITES"
    replicas: int = Field(default=3, ge=1, le=5)  # of the stream, when the hub creates it
    ack_wait_s: float = Field(default=30.0, gt=0)  # redelivery of what a dead replica fetched
    # the stream's retention, when the hub creates it: events are stored in PostgreSQL within seconds, and without a
    # limit the stream keeps them all until JetStream's store is full and refuses every site's publish
    max_age_days: float = Field(default=7.0, gt=0, le=3650)
    # TLS (with tls:// servers): the CA of the cluster's certificates, and the hub's own where the cluster asks
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _login(self) -> NatsSection:
        nats_login(self.user, self.password_env)
        return self


class HttpSection(_Base):
    host: str = "127.0.0.1"
    port: int = Field(default=8790, ge=1, le=65535)
    session_ttl_s: float = Field(default=12 * 3600, gt=0)
    max_failed_logins: int = Field(default=5, ge=1)


class HubSettings(_Base):
    nats: NatsSection
    dsn_env: Env = "SITEGW_HUB_DSN"  # the DSN carries the password: from the environment, never the file
    http: HttpSection | None = None  # none: this replica only consumes
    timezone: str = "Asia/Shanghai"  # the region's local days: same-day clocks, months of the statistics
    # a site is offline at the hub when no status came for this long (sites send one every uplink.status_s)
    offline_after_s: float = Field(default=90.0, gt=0)
    region: Region
    users: list[HubUser] = []

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        iana_zone(v, "name the region's, e.g. 'Asia/Shanghai'")
        return v

    @model_validator(mode="after")
    def _unique(self) -> HubSettings:
        codes: set[str] = set()
        sites: dict[str, str] = {}
        projects: set[str] = set()
        stack = deque([self.region])  # in the file's order: a duplicate is named after its first place
        while stack:
            r = stack.popleft()
            if r.code in codes:
                raise ValueError(f"region code {r.code} appears twice")
            codes.add(r.code)
            stack.extend(r.children)
            for p in r.projects:
                if p.id in projects:
                    raise ValueError(f"project id {p.id} appears twice")
                projects.add(p.id)
                for s in p.sites:
                    if s in sites:
                        raise ValueError(f"site {s} is in two projects: {sites[s]} and {p.id}")
                    sites[s] = p.id
        names: set[str] = set()
        for u in self.users:
            if u.region is not None and u.region not in codes:
                raise ValueError(f"user {u.name}: no region {u.region} in the tree")
            if u.name in names:
                raise ValueError(f"user {u.name} appears twice")
            names.add(u.name)
        return self


class HubConfigError(ValueError):
    """The hub's config file is wrong; the message names the file and the path in it."""


def load_hub_config(path: Path) -> HubSettings:
    try:
        doc = yamltext.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:  # (the last: a file saved as GBK)
        raise HubConfigError(f"{path}: {err}") from None
    try:
        cfg = HubSettings.model_validate(doc)
    except ValidationError as err:
        lines = [f"{path}: {err.error_count()} error(s)"]
        for e in err.errors():
            where = ".".join(str(x) for x in e["loc"]) or "(top)"
            lines.append(f"  {where}: {e['msg']}")
        raise HubConfigError("\n".join(lines)) from None
    # TLS files relative to the config file, like a site's; they must exist (a typo stops the replica here)
    files = {k: getattr(cfg.nats, k) for k in ("ca_file", "cert_file", "key_file")}
    files = {k: (v if v is None or v.is_absolute() else path.parent / v) for k, v in files.items()}
    for k, v in files.items():
        if v is not None and not v.is_file():
            raise HubConfigError(f"{path}: nats.{k}: {v} does not exist")
    return cfg.model_copy(update={"nats": cfg.nats.model_copy(update=files)})
