"""The regional hub's real services for tests and the demo: a NATS JetStream cluster on loopback, and PostgreSQL."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.local import free_port, need, stop_process, wait_for, wait_port


@dataclass
class NatsNode:
    name: str
    client_port: int
    route_port: int
    mqtt_port: int
    monitor_port: int
    conf: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def jsz(self) -> dict[str, object]:
        """The node's JetStream report (/jsz on its monitoring port)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/jsz", timeout=2) as r:
            doc: dict[str, object] = json.loads(r.read())
            return doc


@dataclass
class NatsCluster:
    """`n` nats-server processes routed into one cluster, JetStream and MQTT on each (Debian's nats-server 2.9:
    MQTT 3.1.1 with QoS 1, no `$share` subscriptions)."""

    workdir: Path
    nodes: list[NatsNode] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            self.start_node(node, wait_leader=False)
        self.wait_leader(timeout)
        self.wait_peers(timeout)

    def start_node(self, node: NatsNode, wait_leader: bool = True) -> None:
        with open(node.log, "ab") as fh:
            node.proc = subprocess.Popen(
                [need("nats-server"), "-c", str(node.conf)], stdout=fh, stderr=subprocess.STDOUT, cwd=self.workdir
            )
        wait_port(node.client_port, proc=node.proc)
        if wait_leader:
            self.wait_leader()

    def wait_leader(self, timeout: float = 30.0) -> str:
        """Until a majority of the cluster's nodes see the same JetStream meta leader (and none another); its name.
        A majority, not every node: after a restart of the whole cluster a node may stay "no metadata leader" for
        a while under load (seen on nats-server 2.9) while the others serve the streams; so may a real cluster."""

        def leader() -> str | None:
            seen = [str(meta["leader"]) for _node, meta in self._meta_reports() if meta.get("leader")]
            if len(set(seen)) == 1 and len(seen) > len(self.nodes) // 2:
                return seen[0]
            return None

        name: str = wait_for(leader, timeout, 0.1, "a JetStream meta leader seen by every running node")
        return name

    def wait_peers(self, timeout: float = 30.0) -> None:
        """Until the meta leader counts every other running node as a current peer. A leader seen by a majority
        is not enough for an R3 stream: created before that, it was refused ("no suitable peers for placement",
        err_code 10005, in a clean-clone CI run on a slow machine)."""
        running = {n.name for n in self.nodes if n.running}

        def ready() -> bool:
            for node, meta in self._meta_reports():
                if isinstance(meta.get("replicas"), list):  # (the leader's report)
                    current = {r.get("name") for r in meta["replicas"] if isinstance(r, dict) and r.get("current")}
                    return current >= running - {node.name}
            return False

        wait_for(ready, timeout, 0.1, "the JetStream meta leader counting every running node as a current peer")

    def _meta_reports(self) -> Iterator[tuple[NatsNode, dict[str, Any]]]:
        """Each running node that answers, with its JetStream meta group report."""
        for node in self.nodes:
            if not node.running:
                continue
            try:
                meta = node.jsz().get("meta_cluster")
            except (OSError, urllib.error.URLError, ValueError):
                continue
            if isinstance(meta, dict):
                yield node, meta

    def kill_node(self, node: NatsNode) -> None:
        """kill -9: no goodbye to its peers, as a node lost to a power cut."""
        if node.proc is not None and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                stop_process(node.proc)


@dataclass(frozen=True)
class NatsUser:
    """A login of the cluster. A site's (`site` set) may publish only its own events and status subjects and its
    request for notices, and receive only replies on its own inbox prefix `_INBOX_<site>` (acknowledgements, its
    notices); one without `site` (the hub) may do anything."""

    user: str
    password: str
    site: str | None = None
    prefix: str = "sitegw"

    def conf(self) -> str:
        head = f'{{ user: "{self.user}", password: "{self.password}"'
        if self.site is None:
            return head + " }"
        pub = ", ".join(f'"{self.prefix}.{self.site}.{x}"' for x in ("events", "status", "notices"))
        # replies only on the site's own inbox prefix (gateway/uplink.py inbox_prefix): not another site's notices
        sub = f'"_INBOX_{self.site}.>"'
        return head + f", permissions: {{ publish: {{ allow: [{pub}] }}, subscribe: {{ allow: [{sub}] }} }} }}"


def nats_cluster(
    workdir: Path,
    n: int = 3,
    name: str = "sitegw-region",
    users: list[NatsUser] | None = None,
    tls: tuple[Path, Path] | None = None,
) -> NatsCluster:
    """A cluster of `n` nodes under `workdir` (one store dir and log each); start() it. With `users`, every
    client must log in as one of them (per-site credentials); without, anyone may connect. With `tls`, clients
    must speak TLS (tls:// URLs) and check the nodes' certificate."""
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = NatsCluster(workdir)
    for i in range(1, n + 1):
        cluster.nodes.append(
            NatsNode(
                f"n{i}",
                free_port(),
                free_port(),
                free_port(),
                free_port(),
                workdir / f"n{i}.conf",
                workdir / f"n{i}.log",
            )
        )
    routes = ", ".join(f"nats-route://127.0.0.1:{nd.route_port}" for nd in cluster.nodes)
    for nd in cluster.nodes:
        store = workdir / nd.name
        nd.conf.write_text(
            f"server_name: {nd.name}\nlisten: 127.0.0.1:{nd.client_port}\nhttp: 127.0.0.1:{nd.monitor_port}\n"
            f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 1GB }}\n'
            # no_advertise: a client keeps to the URLs it was given (a site behind NAT or a proxy could not reach
            # the nodes' own addresses; and a test that cuts a site's links must not be bypassed)
            f"cluster {{ name: {name}, listen: 127.0.0.1:{nd.route_port}, routes: [{routes}], no_advertise: true }}\n"
            f"mqtt {{ listen: 127.0.0.1:{nd.mqtt_port} }}\n"
            # clients only: with `tls` (certificate, key) every client connection must be TLS
            + (f'tls {{ cert_file: "{tls[0]}", key_file: "{tls[1]}" }}\n' if tls else "")
            + (f"authorization {{ users: [ {', '.join(u.conf() for u in users)} ] }}\n" if users else "")
        )
    return cluster


@dataclass
class Link:
    """A TCP link that can be cut for real: socat forwarding a loopback port to a NATS node. `cut()` kills it and
    every connection through it (the peer sees its socket closed), `restore()` listens again on the same port."""

    port: int
    target: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def restore(self) -> None:
        argv = [need("socat"), f"TCP-LISTEN:{self.port},bind=127.0.0.1,reuseaddr,fork", f"TCP:127.0.0.1:{self.target}"]
        # its own process group: the forked children (one per connection) go with it on cut()
        self.proc = subprocess.Popen(argv, start_new_session=True)
        wait_port(self.port, proc=self.proc)

    def cut(self) -> None:
        if self.proc is not None:
            # the group even when socat's parent is gone: its forked children hold the open connections
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


def _pg_bin(name: str) -> str:
    """A PostgreSQL server binary: Debian keeps them out of PATH, in /usr/lib/postgresql/<major>/bin."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed; run `make deps` (it apt-installs postgresql)")
    return found


@dataclass
class Postgres:
    """A PostgreSQL cluster of its own in a temp dir, trust auth on 127.0.0.1 only, user `sitegw`. PostgreSQL
    refuses to run as root: as root the server runs as the `postgres` system user (the dir is given to it)."""

    dir: Path
    port: int
    user: str = "sitegw"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    @property
    def _as(self) -> str | None:
        return "postgres" if os.geteuid() == 0 else None

    def init(self) -> None:
        argv = [_pg_bin("initdb"), "-D", str(self.dir / "data"), "-A", "trust", "-U", self.user, "--no-sync"]
        subprocess.run(argv, check=True, capture_output=True, user=self._as, cwd=self.dir)

    def start(self, timeout: float = 30.0) -> None:
        logfile = self.dir / "postgres.log"
        since = logfile.stat().st_size if logfile.exists() else 0  # a restart's readiness, not the last start's
        argv = [_pg_bin("postgres"), "-D", str(self.dir / "data"), "-p", str(self.port), "-k", str(self.dir)]
        with open(logfile, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [*argv, "-c", "listen_addresses=127.0.0.1"],
                stdout=log,
                stderr=subprocess.STDOUT,
                user=self._as,
                cwd=self.dir,
            )
        wait_port(self.port, timeout, self.proc)
        deadline = time.monotonic() + timeout
        while b"ready to accept connections" not in logfile.read_bytes()[since:]:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"PostgreSQL did not become ready; see {self.dir / 'postgres.log'}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 30)  # SIGTERM: a "smart" shutdown, then kill

    def kill(self) -> None:
        """kill -9 of the postmaster: it recovers from its WAL at the next start."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def postgres() -> Postgres:
    """An initialised, not yet started cluster in a fresh dir under the system temp dir (the test's own tmp dirs
    are root's alone, and the server may have to run as `postgres`); remove() it when done."""
    d = Path(tempfile.mkdtemp(prefix="sitegw-pg-"))
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(d, pw.pw_uid, pw.pw_gid)
    pg = Postgres(d, free_port())
    pg.init()
    return pg
