"""The hub's statistics month (hub/api.py `month_span`): a month out of range is a 422 naming it, not a 500."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from fastapi import HTTPException

from hub.api import month_span

TZ = ZoneInfo("Asia/Shanghai")


def test_a_month_is_the_regions_month() -> None:
    since, until, text = month_span(TZ, "2026-11", cumulative=False)
    assert (until - since) // 1_000_000_000 == 30 * 86400 and text == "2026年11月"
    assert month_span(TZ, "2026-12", cumulative=True)[0] == 0


@pytest.mark.parametrize("month", ["9999-12", "1900-01", "2262-01", "2026-13", "2026"])
def test_a_month_out_of_range_is_refused_by_name(month: str) -> None:
    # 9999-12 built datetime(10000, 1, 1) outside the check: a bare 500
    with pytest.raises(HTTPException) as err:
        month_span(TZ, month, cumulative=False)
    assert err.value.status_code == 422 and "month" in str(err.value.detail)
