"""Citing the major-hazard criteria (重大事故隐患判定标准): the editions, and an article as a supervisor writes it."""

from __future__ import annotations

import re
from datetime import date

from alerting.hazards.model import HazardBadRequest

CRITERIA_DOC: dict[str, str] = {"2024": "建质规〔2024〕5号", "2022": "建质规〔2022〕2号"}
# 建质规〔2024〕5号 is dated 2024-12-13 and effective on issue; it repeals the 2022 edition (art. 18, domain.md §0, §8)
CRITERIA_2024_ISSUED = date(2024, 12, 13)

# "8(四)", "5(四)1", "17": article, optional item (项) in Chinese numerals, optional sub-item (目)
_ARTICLE = re.compile(r"^(\d{1,2})(?:[(（]([一二三四五六七八九十]{1,3})[)）](\d{1,2})?)?$")
_DIGITS = "零一二三四五六七八九"


def _zh_number(n: int) -> str:
    if n < 10:
        return _DIGITS[n]
    tens, ones = divmod(n, 10)
    return ("" if tens == 1 else _DIGITS[tens]) + "十" + (_DIGITS[ones] if ones else "")


def normalize_article(article: str) -> str:
    """'8（四）' -> '8(四)'; raises HazardError unless it reads article[(item)[sub-item]]."""
    m = _ARTICLE.match(article.strip())
    if m is None:
        raise HazardBadRequest(f"basis article {article!r} must read like 8(四), 5(四)1 or 17")
    num, item, sub = m.groups()
    return num + (f"({item})" if item else "") + (sub or "")


def basis_citation(version: str, article: str) -> str:
    """'2024', '8(四)' -> '建质规〔2024〕5号 第八条第（四）项'; '5(四)1' -> '... 第五条第（四）项第1目'."""
    m = _ARTICLE.match(article)
    if m is None or version not in CRITERIA_DOC:
        return f"{CRITERIA_DOC.get(version, version)} {article}"
    num, item, sub = m.groups()
    text = f"第{_zh_number(int(num))}条"
    if item:
        text += f"第（{item}）项"
    if sub:
        text += f"第{sub}目"
    return f"{CRITERIA_DOC[version]} {text}"
