"""drivers.mqtt.client.TopicMatcher: paho's matching (`+`, `#`, `$` topics), each topic's matches remembered."""

from __future__ import annotations

import gc
import itertools

from paho.mqtt.matcher import MQTTMatcher

from drivers.mqtt.client import TopicMatcher

FILTERS = ["site/+/data", "site/#", "site/gas/SN-01", "+/gas/+", "#", "$SYS/#", "a/b"]
TOPICS = ["site/gas/data", "site/gas/SN-01", "site", "x/gas/y", "$SYS/broker/load", "a/b", "a/b/c", "site/gas"]


def test_it_matches_what_paho_matches_and_remembers_nothing_stale() -> None:
    ours, paho = TopicMatcher(), MQTTMatcher()  # type: ignore[no-untyped-call]
    for i, f in enumerate(FILTERS):
        ours[f] = paho[f] = (f, i)
        for t in TOPICS:  # asked between additions: a remembered answer must not outlive a new filter
            assert sorted(ours.iter_match(t)) == sorted(paho.iter_match(t)), (f, t)  # type: ignore[no-untyped-call]
    del ours["#"]
    del paho["#"]
    for t in TOPICS:
        assert sorted(ours.iter_match(t)) == sorted(paho.iter_match(t)), t  # type: ignore[no-untyped-call]
    assert ours["a/b"] == ("a/b", 6)


def test_repeated_lookups_make_no_garbage_and_a_flood_of_topics_is_bounded() -> None:
    m = TopicMatcher()
    assert m.iter_match("dev/1/data") == () and not m._seen  # no filters (paho's callbacks): nothing remembered
    m["dev/+/data"] = "d"
    m.iter_match("dev/1/data")
    gc.collect()
    gc.disable()
    try:
        for _ in range(1000):
            assert m.iter_match("dev/1/data") == ("d",)
        assert gc.collect() == 0
    finally:
        gc.enable()
    for i in itertools.islice(itertools.count(), 3 * TopicMatcher.MAX_TOPICS):
        assert m.iter_match(f"dev/{i}/data") == ("d",)
    assert len(m._seen) <= TopicMatcher.MAX_TOPICS
    m._seen.clear()
    long = "dev/" + "x" * TopicMatcher.MAX_REMEMBERED_CHARS + "/data"
    assert m.iter_match(long) == ("d",) and not m._seen  # answered, not kept
