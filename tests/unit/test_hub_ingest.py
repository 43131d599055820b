"""The hub's parsing of site events and statuses (hub/ingest.py): what PostgreSQL or the hub cannot take is BadEvent."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hub.ingest import BadEvent, parse, parse_status


def alarm(**data: Any) -> dict[str, Any]:
    d = {"alarm_id": 1, "rule": "gas.lel", "device": "G1", "quantity": "lel", "state": "active_unacked", "level": 2,
         "value": 30.0, "threshold": 25.0, "source": "GB/T 50493-2019", **data}  # fmt: skip
    return {"id": "B:e1:1", "site": "B", "seq": 1, "kind": "alarm.raised", "at_ns": 1, "data": d}


def raw(doc: dict[str, Any], surrogate: str = "") -> bytes:
    """The document as a site could send it; `surrogate` names a string whose value becomes the escape \\ud800."""
    text = json.dumps(doc)
    return text.replace(f'"{surrogate}"', '"\\ud800"').encode() if surrogate else text.encode()


def test_a_valid_alarm_event_parses() -> None:
    assert parse(raw(alarm()), "sitegw.B.events").data["level"] == 2


@pytest.mark.parametrize("field", ["level", "value", "threshold", "alarm_id"])
def test_a_json_boolean_is_no_number(field: str) -> None:
    # a bool is a Python int: it passed, and PostgreSQL refused it as a datatype mismatch, stalling the batch
    with pytest.raises(BadEvent, match=field):
        parse(raw(alarm(**{field: True})), "sitegw.B.events")


def test_a_hazard_id_that_is_a_boolean_is_refused() -> None:
    rec = {"status": "reported", "klass": None, "listing": "none", "listing_due_ns": None, "report_due_ns": None,
           "reported_at_ns": None, "found_at_ns": 1, "unit_name": "u", "description": "d"}  # fmt: skip
    doc = {**alarm(), "kind": "hazard.reported", "data": {"hazard_id": True, "record": rec}}
    with pytest.raises(BadEvent, match="hazard_id"):
        parse(raw(doc), "sitegw.B.events")


def test_nesting_beyond_the_stack_is_a_bad_event_not_a_recursion_error() -> None:
    body = raw(alarm()).replace(b'"data": {', b'"deep": ' + b"[" * 100_000 + b"]" * 100_000 + b', "data": {')
    with pytest.raises(BadEvent, match="RecursionError"):
        parse(body, "sitegw.B.events")


def test_nesting_beyond_the_bound_is_refused() -> None:
    deep: Any = []
    for _ in range(64):  # beyond hub.ingest.MAX_DEPTH, well within Python's stack
        deep = [deep]
    with pytest.raises(BadEvent, match="nested deeper"):
        parse(raw(alarm(extra=deep)), "sitegw.B.events")
    parse(raw(alarm(extra=[[["three deep is fine"]]])), "sitegw.B.events")


@pytest.mark.parametrize("where", ["text", "key"])
def test_a_lone_surrogate_is_refused_in_an_event(where: str) -> None:
    doc = alarm(text="LONE") if where == "text" else alarm(LONE=1)
    with pytest.raises(BadEvent, match="surrogate"):
        parse(raw(doc, "LONE"), "sitegw.B.events")


def test_a_lone_surrogate_is_refused_in_a_status() -> None:
    with pytest.raises(BadEvent, match="surrogate"):
        parse_status(raw({"site": "B", "at_ns": 1, "health": "LONE"}, "LONE"), "sitegw.B.status")
    assert parse_status(raw({"site": "B", "at_ns": 1, "health": "正常"}), "sitegw.B.status")[0] == "B"


@pytest.mark.parametrize("body", [b"[1]", b'"x"', b"\xff", b"[" * 100_000])
def test_what_is_no_json_object_is_a_bad_status(body: bytes) -> None:
    with pytest.raises(BadEvent):
        parse_status(body, "sitegw.B.status")


def test_ids_and_sites_too_long_for_an_index_are_refused() -> None:
    # PostgreSQL refuses an index entry over ~2.7 kB: such an event held up its whole batch, such a status every
    # site's statuses (they are stored together)
    doc = {"id": "A:" + "e" * 300 + ":1", "site": "A", "seq": 1, "kind": "alarm.raised", "at_ns": 1, "data": {}}
    with pytest.raises(BadEvent, match="too long"):
        parse(json.dumps(doc).encode(), "sitegw.A.events")
    site = "S" * 65
    with pytest.raises(BadEvent, match="at most 64"):
        parse_status(json.dumps({"site": site, "at_ns": 1}).encode(), f"sitegw.{site}.status")
