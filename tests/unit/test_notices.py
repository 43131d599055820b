"""Supervision notices at the site: kept once by the hub's id, acknowledged once by a manager, each step reported
to the hub through the outbox in the same transaction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alerting.db import audit_rows, connect
from alerting.notices import NoticeError, Notices
from alerting.roles import Forbidden, Role
from alerting.uplink import UplinkOutbox


def store(tmp_path: Path) -> tuple[Notices, UplinkOutbox]:
    conn = connect(tmp_path / "state.db")
    box = UplinkOutbox("s1")
    box.bind(conn)
    t = iter(range(1_000, 10_000))
    return Notices(conn, lambda: next(t), box.on_notice), box


def test_a_notice_resent_by_the_hub_is_kept_once_and_its_receipt_reported_once(tmp_path: Path) -> None:
    nts, box = store(tmp_path)
    item = {"id": 7, "sent_ns": 5, "sent_by": "省住建厅", "text": "立即整改", "hazard_id": 3, "due": "2026-12-10"}
    assert nts.receive([item]) == ([7], [])
    assert nts.receive([item, {**item, "id": 8, "hazard_id": None}]) == ([8], [])  # 7 again changes nothing
    got = nts.list()
    assert [(n["id"], n["hazard_id"], n["due"], n["acked_ns"]) for n in got] == [(8, None, "2026-12-10", None),
                                                                              (7, 3, "2026-12-10", None)]  # fmt: skip
    events = box.pending(10)
    assert [(e.kind, json.loads(e.body)["data"]) for e in events] == [
        ("notice.received", {"notice_id": 7}),
        ("notice.received", {"notice_id": 8}),
    ]


def test_a_manager_acknowledges_once_with_an_answer_and_the_hub_hears_it(tmp_path: Path) -> None:
    nts, box = store(tmp_path)
    nts.receive([{"id": 1, "text": "限期整改", "sent_by": "县住建局"}])
    with pytest.raises(Forbidden):
        nts.ack(1, actor="zhang", role=Role.OFFICER, note="收到")
    with pytest.raises(NoticeError, match="say what the site does"):
        nts.ack(1, actor="li", role=Role.MANAGER, note="  ")
    nts.ack(1, actor="li", role=Role.MANAGER, note="已安排整改")
    with pytest.raises(NoticeError, match="acknowledged already"):
        nts.ack(1, actor="li", role=Role.MANAGER, note="again")
    with pytest.raises(NoticeError, match="no notice 2"):
        nts.ack(2, actor="li", role=Role.MANAGER, note="x")
    (n,) = nts.list()
    assert (n["acked_by"], n["ack_note"]) == ("li", "已安排整改") and nts.list(open_only=True) == []
    assert json.loads(box.pending(10)[-1].body)["data"] == {"notice_id": 1, "by": "li", "note": "已安排整改"}
    assert [r["action"] for r in audit_rows(nts.conn, "notice:1")] == ["notice.ack", "notice.received"]


def test_a_malformed_notice_is_said_and_does_not_hold_back_the_others(tmp_path: Path) -> None:
    nts, box = store(tmp_path)
    new, bad = nts.receive([{"id": "9", "text": "x"}, {"id": 10, "text": "  "}, {"id": 11, "text": "整改"}])
    assert new == [11] and len(bad) == 2 and all("integer id and a text" in b for b in bad)
    assert [n["id"] for n in nts.list()] == [11] and len(box.pending(10)) == 1
