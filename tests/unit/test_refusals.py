"""Every refusal the API can give has Chinese words: the raise sites are read from the source (so a new English
message without a zh pattern fails here), rendered with a stand-in value, and must say it in Chinese."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from alerting.baselines import Baselines
from alerting.db import connect
from gateway.refusals import message_zh, say_zh

ROOT = Path(__file__).resolve().parents[2]
# the modules whose refusals reach the API's answers or a surveyor's upload
API_MODULES = [
    "alerting/hazards/model.py",
    "alerting/hazards/citation.py",
    "alerting/hazards/store.py",
    "alerting/hazards/clocks.py",
    "alerting/hazards/workflow.py",
    "alerting/alarms/lifecycle.py",
    "alerting/alarms/store.py",
    "alerting/roles.py",
    "alerting/baselines.py",
    "gateway/api/auth.py",
    "gateway/api/live.py",
    "gateway/api/alarms.py",
    "gateway/api/baselines.py",
    "gateway/api/hazards.py",
    "gateway/api/reports.py",
    "gateway/api/surveys.py",
    "gateway/api/deps.py",
    "gateway/surveys.py",
    "gateway/siteplan.py",
    "gateway/history.py",
    "drivers/survey.py",
]
# raised where a refusal comes from (the first string argument is the message; HTTPException's is the second);
# a Refused is given its Chinese where it is raised
RAISED = {
    "ValueError", "KeyError", "HazardError", "HazardBadRequest", "LifecycleError", "BadRequest", "UnknownAlarm",
    "Forbidden", "AuthError", "HTTPException",
}  # fmt: skip
# messages of the site file's checks: said when `sitegw check` or start-up loads the file, never by the API
NOT_API = (
    re.compile(r"^7: a position needs site\.plan"),
    re.compile(r"^7: \(7, 7\) m lies outside the plan"),
    re.compile(r"^site\.plan\.image: "),
    re.compile(r"^chatter_count, chatter_window_s and max_shelve_s must be positive$"),
    re.compile(r"^the HTTP API cannot listen on"),
)
# words a Chinese refusal may keep: file formats, encodings, sizes
TECH = {"JSON", "base", "PNG", "JPEG", "WebP", "SVG", "XLSX", "CSV", "UTF", "GB", "MiB", "csv", "xlsx"}
LATIN = re.compile(r"[A-Za-z][A-Za-z_]+")


def _render(node: ast.expr) -> str | None:
    """A string literal or f-string with every formatted value as 7 (an id, a count, a name alike)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "7" for v in node.values)
    return None


def _messages() -> list[tuple[str, int, str]]:
    out = []
    for rel in API_MODULES:
        tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            calls = [node.exc] if isinstance(node, ast.Raise) and node.exc is not None else []
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Problem":
                calls = [node]
            for call in calls:
                if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
                    continue
                name = call.func.id
                if name == "Problem" and len(call.args) in (3, 4):  # (the fourth: the worksheet)
                    arg = call.args[2]
                elif name == "HTTPException" and len(call.args) >= 2:
                    arg = call.args[1]
                elif name in RAISED and call.args:
                    arg = call.args[0]
                else:
                    continue
                text = _render(arg)
                if text is not None and not any(rx.search(text) for rx in NOT_API):
                    out.append((rel, node.lineno, text))
    return out


# messages put together from parts: the scan sees a stand-in, these are what the parts make
COMPOSED = {
    "alarm 7 cannot be acknowledged: 7": [
        "alarm 7 cannot be acknowledged: it is still pending (its on-delay has not run out)",
        "alarm 7 cannot be acknowledged: it is closed",
        "alarm 7 cannot be acknowledged: it was already acknowledged by 7",
    ],
    "7 row 7 for 7 (7)": [
        "the same survey time as row 4 for 7 (horizontal_displacement)",
        "earlier than row 4 for 7 (horizontal_displacement)",
        "the same survey time as sheet '水平位移', row 4 for 7 (horizontal_displacement)",
        "earlier than sheet '水平位移', row 4 for 7 (horizontal_displacement)",
    ],
}
MESSAGES = [(w, n, full) for w, n, m in _messages() for full in COMPOSED.get(m, [m])]


def test_the_source_scan_finds_the_refusals() -> None:
    # the scan itself can fail: it must see the messages of every kind of raise site
    texts = {m for _, _, m in MESSAGES}
    assert "shelving needs a reason" in texts
    assert "ledger formats: csv, xlsx" in texts
    assert "the survey time is in the future" in texts
    assert "cannot 7 hazard 7: it is 7; 7 is allowed from 7" in texts
    assert len(MESSAGES) > 60


@pytest.mark.parametrize(("where", "line", "detail"), MESSAGES, ids=[f"{w}:{n}" for w, n, _ in MESSAGES])
def test_every_refusal_is_said_in_chinese(where: str, line: int, detail: str) -> None:
    zh = say_zh(detail)
    assert zh is not None, f"{where}:{line}: no zh-CN wording for {detail!r} (add it to gateway/refusals.py)"
    assert not {w for w in LATIN.findall(zh) if w not in TECH}, f"{where}:{line}: {zh!r}"
    assert re.search(r"[\u4e00-\u9fff]", zh)


def test_values_are_said_in_their_words() -> None:
    assert say_zh("cannot accept hazard 4: it is rectifying; accept is allowed from submitted") == (
        "隐患 #4 当前为整改中，不能验收销号（待复查时才可以）"
    )
    assert say_zh("alarm 3 is active_acked: only a latched alarm can be reset") == (
        "报警 #3 当前为已确认，只有锁定待复位的报警才能复位"
    )
    assert say_zh("hazard 2 is already listed at city level") == "隐患 #2 已在市级挂牌督办"
    assert say_zh("measures (整改措施) is required") == "缺少必填项：整改措施"
    assert say_zh("no baseline for cx-01/settlement") == "cx-01 的模板沉降尚无基准值"
    assert say_zh("hazard confirm needs role manager (you are officer)") == "需要项目经理权限（当前为安全员）"


def test_a_framework_message_is_said_as_its_kind() -> None:
    assert message_zh(404, "Not Found") == "未找到"
    assert message_zh(405, "Method Not Allowed") == "不支持该请求方法"
    assert message_zh(418, "I'm a teapot") == "请求未完成"


def test_a_dynamic_message_is_said_too(tmp_path: Path) -> None:
    # baselines re-raise the catalog's KeyError text, which no literal shows
    b = Baselines(connect(tmp_path / "s.db"), clock=lambda: 0)
    with pytest.raises(ValueError) as err:
        b.set("cx-01", "no_such_quantity", 1.0, "amy")
    assert message_zh(422, str(err.value)) == "未知监测量 'no_such_quantity'"
