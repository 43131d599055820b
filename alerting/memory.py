"""What the alarm evaluator remembers between readings, kept in a file of its own across a restart."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from alerting.evaluator import Evaluator
from alerting.measures import Saved

log = logging.getLogger("sitegw.alarms")

# of the `memory` row's JSON; a file of another format is set aside, not misread. Its `judged` and `rest` keys came
# later within format 1: the release before them ignores them (it has no older-reading guard to give them to; a new
# format would have set its whole memory aside after a downgrade), and a file without them loads with the judged
# times unknown, as that release left them
FORMAT = 1
SLOW_S = 60.0  # a point reported this seldom or less often has its judged times saved (`EvaluatorMemory._slow`)
SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    device TEXT NOT NULL, quantity TEXT NOT NULL, span REAL NOT NULL, ts INTEGER NOT NULL, v REAL NOT NULL);
CREATE INDEX IF NOT EXISTS samples_by_window ON samples (device, quantity, span, ts);
CREATE TABLE IF NOT EXISTS memory (
    id INTEGER PRIMARY KEY CHECK (id = 1), format INTEGER NOT NULL, saved_ns INTEGER NOT NULL, data TEXT NOT NULL);
"""
Key = tuple[str, str, float]  # a window: device, quantity, span
RuleKey = tuple[str, str, str]  # a rule on a point: rule, device, quantity
# the windows' new samples (numpy arrays, copies: made into rows in the thread), the rest as JSON (whole, and
# without the judged times), and the number of the snapshot (a later one supersedes it)
Snapshot = tuple[list[tuple[Key, int, int, Any, Any]], str, str, int]
CORE = ("daily", "prev", "frozen", "runs")  # the JSON's keys but the judged times (`judged`, `rest`)
Judged = dict[RuleKey, tuple[int, int, float]]  # -> LevelState's judged_ns, judged_at_ns, judged_v
Rest = list[tuple[str, int, dict[str, int]]]  # level_state.py States.rest_times


def _dumps(x: object) -> str:
    return json.dumps(x, separators=(",", ":"), ensure_ascii=False)


def memory_path(state_file: Path) -> Path:
    """`var/state/sitegw.db` -> `var/state/sitegw.memory.db`."""
    return state_file.with_name(f"{state_file.stem}.memory.db")


class EvaluatorMemory:
    """The evaluator keeps in memory the samples of its windows (an excavation point's 24 h rate, a gas detector's
    8 h TWA), each point's daily values, a survey rate's previous reading, frozen runs and the counts of readings
    in a row at a threshold, and each rule's newest judged reading time on each point (older readings are history).
    A restart lost them all: a 24 h rate was blind for 12 h, a 预警 on three surveys in a row waited for three more,
    a TWA started again from nothing, a back-filled reading was judged as the present. They are saved here every
    `every_s` seconds when they changed, by a worker thread (only the samples taken since the last save are written,
    and those that left their windows deleted: an SD card is not rewritten whole each time), and at a clean stop;
    loaded at start. A `kill -9` loses at most the last `every_s` seconds of them. The judged times move with every
    reading: they go with any save but make none by themselves (a crane site's file would be rewritten every
    `every_s` for them), but for a clean stop's; after a `kill -9` they may be older (the alarm database gives back
    the time behind each open alarm's level, engine.py). SQLite (WAL, synchronous NORMAL: a power cut may lose the
    last save, never the file), in a file of its own: the alarm database's writes never wait for it."""

    def __init__(self, evaluator: Evaluator, path: Path, every_s: float) -> None:
        self.evaluator = evaluator
        # the points whose judged times are worth a restart: reported every minute or less often, their older-reading
        # guard spans 3 minutes or more. A crane's or a gas detector's (every 1-5 s) has lapsed by the time a
        # gateway is back, and 24 000 of them (2 000 cranes) made each save's JSON 2 MB and the RSS 3 MB more
        self._slow = frozenset(d for d, ctx in evaluator.devices.items() if (ctx.expected_interval_s or 0) >= SLOW_S)
        self.path = path
        self.every_s = every_s
        self.saves = 0
        self.loaded = "nothing saved"  # what the start found (the log says it)
        # one writer at a time, the task's thread or the stop's final save; each writes only what the other has not
        # (`_write`): the stop's cancel leaves a thread's write running
        self._lock = threading.RLock()
        self._saved: dict[Key, int] = {}  # window -> its `added` count when last saved
        self._small = ""  # the JSON last saved
        self._core = ""  # and without its judged times
        self._taken = 0  # snapshots taken (`_take`)
        self._written = 0  # the number of the snapshot whose JSON was last written
        self._stopped = False
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
            self._conn = conn
        return self._conn

    # ---- start -------------------------------------------------------------------------------------------------

    def load(self) -> None:
        """Give the evaluator what the last run remembered. A file that cannot be read is set aside (renamed
        `.unreadable-<time>`), said at ERROR, and the evaluator starts empty, as it did before this file existed."""
        if not self.path.exists():
            return
        try:
            with self._lock:
                saved, runs, judged, rest, saved_ns = self._read()
                spans, states = self.evaluator.spans, self.evaluator.states
                saved = saved._replace(windows=[w for w in saved.windows if w[2] in spans(w[0])])
                self.evaluator.measures.load(saved)
                for key, (counts, run_ns) in runs.items():
                    states.restore_runs(key, counts, run_ns)
                for key, (judged_ns, at_ns, v) in judged.items():
                    states.restore_judged(key, judged_ns, at_ns, v)
                for device, at_ns, points in rest:
                    if device in self.evaluator.devices:
                        states.restore_rest(device, at_ns, points)
                self._forget_unconfigured()
        except (sqlite3.Error, ValueError, KeyError, TypeError, AttributeError, OverflowError) as err:
            self.close()
            self._saved, self._small, self._core = {}, "", ""
            # (named by the time: an earlier one set aside, say a newer release's after a downgrade, is kept)
            aside = self.path.with_name(f"{self.path.name}.unreadable-{time.strftime('%Y%m%dT%H%M%S')}")
            for part in ("", "-wal", "-shm"):  # (SQLite's log and index beside it go with it)
                if Path(f"{self.path}{part}").exists():
                    Path(f"{self.path}{part}").replace(f"{aside}{part}")
            self.loaded = f"unreadable ({type(err).__name__}: {err}); set aside as {aside.name}, starting empty"
            log.error("alarm evaluator memory %s: %s", self.path, self.loaded)
            return
        when = f"saved {max(0, time.time_ns() - saved_ns) / 1e9:.0f} s ago" if saved_ns else "never saved whole"
        self.loaded = (
            f"{len(saved.windows)} windows ({sum(len(w[5]) for w in saved.windows)} samples), {len(saved.daily)} daily "
            f"series, {len(runs)} counts in a row, {len(judged) + sum(len(p) for *_, p in rest)} judged times, {when}"
        )
        log.info("alarm evaluator memory %s: %s", self.path, self.loaded)

    def _read(self) -> tuple[Saved, dict[RuleKey, tuple[dict[int, int], int]], Judged, Rest, int]:
        conn = self._connect()
        row = conn.execute("SELECT format, saved_ns, data FROM memory").fetchone()
        if row is None:
            data: dict[str, Any] = {"daily": [], "prev": [], "frozen": [], "runs": []}
            saved_ns = 0
        elif row[0] != FORMAT:
            raise ValueError(f"format {row[0]}; this release reads format {FORMAT}")
        else:
            data, saved_ns = json.loads(row[2]), int(row[1])
        windows = []
        rows = conn.execute(
            "SELECT device, quantity, span, ts, v FROM samples ORDER BY device, quantity, span, ts, rowid"
        )
        for (d, q, span), group in itertools.groupby(rows, key=lambda r: (r[0], r[1], r[2])):
            import numpy as np  # (only with windows to load: a crane-only site never imports numpy)

            samples = list(group)
            ts = np.array([r[3] for r in samples], dtype=np.int64)
            v = np.array([r[4] for r in samples], dtype=float)
            windows.append((str(d), str(q), float(span), len(samples), int(ts[0]), ts, v))
            self._saved[(str(d), str(q), float(span))] = len(samples)
        saved = Saved(
            windows,
            [(str(d), str(q), [(int(t), float(v)) for t, v in days]) for d, q, days in data["daily"]],
            {(str(d), str(q)): (int(a), float(v), int(b)) for d, q, a, v, b in data["prev"]},
            {(str(d), str(q)): (float(v), int(n)) for d, q, v, n in data["frozen"]},
        )
        runs: dict[RuleKey, tuple[dict[int, int], int]] = {
            (str(r), str(d), str(q)): ({int(k): int(n) for k, n in c.items()}, int(at))
            for r, d, q, c, at in data["runs"]
        }
        # (a memory saved before the judged times were kept has none: unknown, as they were)
        judged = {
            (str(r), str(d), str(q)): (int(ns), int(at), float(v)) for r, d, q, ns, at, v in data.get("judged", [])
        }
        rest = [(str(d), int(at), {str(q): int(ns) for q, ns in p.items()}) for d, at, p in data.get("rest", [])]
        self._small = row[2] if row is not None else ""
        self._core = _dumps({k: data[k] for k in CORE})
        return saved, runs, judged, rest, saved_ns

    def _forget_unconfigured(self) -> None:
        """Samples of devices no longer configured were not loaded, nor those of a window whose span no rule asks
        for any more (its `window_s` changed): their rows go too."""
        gone = [(d, q, span) for d, q, span in self._saved if span not in self.evaluator.spans(d)]
        conn = self._connect()
        for d, q, span in gone:
            conn.execute("DELETE FROM samples WHERE device = ? AND quantity = ? AND span = ?", (d, q, span))
            del self._saved[(d, q, span)]

    # ---- saving ------------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Save every `every_s` seconds what changed (the task supervisor runs it: a failure, a full disk, is
        logged, counted, in /health and sent to the sirens, and the task restarts)."""
        while True:
            await asyncio.sleep(self.every_s)
            snap = self._take(judged_alone=False)
            if snap is not None:
                await asyncio.to_thread(self._write, snap)

    def save(self) -> bool:
        """Save now, in this thread (a clean stop); False when nothing changed since the last save."""
        with self._lock:
            snap = self._take()
            if snap is None:
                return False
            self._write(snap)
            return True

    def _take(self, judged_alone: bool = True) -> Snapshot | None:
        """On the event loop: what changed since the last save, copied (the thread must not read live state); with
        `judged_alone` False, nothing when only judged times changed."""
        saved, states = self.evaluator.measures.saved(self._saved), self.evaluator.states
        core = _dumps(
            {
                "daily": [[d, q, days] for d, q, days in saved.daily],
                "prev": [[d, q, *x] for (d, q), x in saved.prev.items()],
                "frozen": [[d, q, *x] for (d, q), x in saved.frozen.items()],
                "runs": [[*k, {int(lv): n for lv, n in c.items()}, at] for k, (c, at) in states.runs().items()],
            }
        )
        # (a window with no new sample is left out: samples leave a window only as one comes)
        windows = [((d, q, s), n, oldest, ts, v) for d, q, s, n, oldest, ts, v in saved.windows]
        if not windows and core == self._core and not judged_alone:
            return None
        judged = _dumps(
            {
                "judged": [[*k, *x] for k, x in states.judged_times(self._slow).items()],
                "rest": states.rest_times(self._slow),
            }
        )
        small = f"{core[:-1]},{judged[1:]}"  # (one object of both's keys: the core's JSON is not made twice)
        if not windows and small == self._small:
            return None
        self._taken += 1
        return windows, small, core, self._taken

    def _write(self, snap: Snapshot) -> None:
        """In the worker thread (or the stop's). Under the lock it writes only what no save has written since the
        snapshot was taken: a periodic save whose thread the stop overtook (the stop took the lock first and wrote
        the same samples and newer ones) writes nothing twice, and an older memory row never replaces a newer."""
        windows, small, core, number = snap
        with self._lock:
            if self._stopped:
                return
            fresh = []
            for key, added, oldest, ts, v in windows:
                new = added - self._saved.get(key, 0)
                if new > 0:
                    fresh.append((key, added, oldest, ts[-new:], v[-new:]))
            if number < self._written:
                small = ""
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                for (d, q, span), _, oldest, ts, v in fresh:
                    where = "device = ? AND quantity = ? AND span = ?"
                    conn.execute(f"DELETE FROM samples WHERE {where} AND ts < ?", (d, q, span, oldest))
                    conn.executemany(
                        "INSERT INTO samples (device, quantity, span, ts, v) VALUES (?, ?, ?, ?, ?)",
                        [(d, q, span, t, x) for t, x in zip(ts.tolist(), v.tolist(), strict=True)],
                    )
                if small:
                    conn.execute(
                        "INSERT OR REPLACE INTO memory (id, format, saved_ns, data) VALUES (1, ?, ?, ?)",
                        (FORMAT, time.time_ns(), small),
                    )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            for key, added, *_ in fresh:
                self._saved[key] = added
            if small:
                self._small, self._core, self._written = small, core, number
            self.saves += 1

    def stop(self) -> None:
        """A clean stop: save what changed, then close the file (a failure is logged; the stop goes on)."""
        try:
            self.save()
        except (sqlite3.Error, OSError):
            log.exception("alarm evaluator memory %s: the last save failed", self.path)
        with self._lock:
            self._stopped = True  # (a periodic save's thread still to come writes nothing, opens nothing)
            self.close()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
