"""The API's refusals in Chinese: each English detail the gateway can give, matched and said again in zh-CN."""

from __future__ import annotations

import re
from collections.abc import Callable

from alerting.glossary import ZH
from telemetry import quantities

# `detail` stays English for scripts and logs; `detail_zh` is what the console shows. A refusal with no pattern here
# is said as its kind only (a test keeps every refusal the code can raise matched, so that is a framework message).
_BY_STATUS = {
    400: "请求有误",
    401: "请先登录",
    403: "无权限",
    404: "未找到",
    405: "不支持该请求方法",
    408: "请求超时",
    409: "当前状态不允许该操作",
    413: "请求内容过大",
    415: "请求格式不受支持",
    422: "请求内容有误",
    429: "操作过于频繁，请稍后再试",
}
ACTIONS = {
    "confirm": "判定", "dismiss": "排除", "assign": "安排整改", "list_supervision": "挂牌督办", "submit": "提交复查",
    "accept": "验收销号", "reject": "退回整改", "reopen": "重新打开", "mark_reported": "登记上报", "report": "登记隐患",
}  # fmt: skip
# request fields as the forms name them
FIELDS = {
    "unit_name": "隐患单位名称", "description": "隐患内容", "reason": "原因", "responsible": "责任人",
    "measures": "整改措施", "emergency_plan": "应急预案", "to": "接收部门", "evidence": "整改证据",
    "comment": "说明", "device": "设备", "quantity": "监测量", "value": "数值", "actor": "操作人", "why": "原因",
    "funds": "整改资金", "deadline": "整改期限", "basis": "判定依据", "klass": "隐患等级", "source": "隐患来源",
    "alarm_id": "报警编号", "found_ns": "发现时间", "reported_ns": "上报时间", "completed_on": "完成日期",
    "level": "督办级别", "duration_s": "时长", "content_b64": "文件内容", "filename": "文件名", "finding": "检查发现",
    "danger": "是否危险", "username": "用户名", "password": "密码", "timezone": "时区", "body": "请求内容",
    "window_s": "时间窗", "max_points": "点数", "limit": "条数", "since_ns": "起始时间", "until_ns": "截止时间",
    "active_alarm_reason": "报警未消除时验收的理由", "location": "部位", "hazard_id": "隐患编号",
}  # fmt: skip


def field_zh(name: str) -> str:
    """A request field's name on the form; an unknown one (a typo in a script) as it was sent."""
    return FIELDS.get(name, name)


def _roles(text: str) -> str:
    return "、".join(ZH.get(f"role_{r.strip()}", r.strip()) for r in text.split(","))


def _hz_states(text: str) -> str:
    return "、".join(ZH.get(f"hz_{s.strip()}", s.strip()) for s in re.split(r" / |,| or ", text) if s.strip())


# group name -> how its text is said in Chinese; any other group is kept as it was (ids, numbers, names, dates)
_SAY: dict[str, Callable[[str], str]] = {
    "sheet": lambda v: "工作表“" + v.strip("'") + "”",  # a workbook's worksheet, where a message names one
    "role": lambda v: ZH.get(f"role_{v}", v),
    "role2": lambda v: ZH.get(f"role_{v}", v),
    "roles": _roles,
    "hstate": lambda v: ZH.get(f"hz_{v}", v),
    "hstates": _hz_states,
    "astate": lambda v: ZH.get(f"state_{v}", v),
    "action": lambda v: ACTIONS.get(v, v),
    "listing": lambda v: ZH.get(f"listing_{v}", v),
    "field": lambda v: field_zh(v.split(" (")[0]),
    "q": quantities.quantity_zh,
    "hint": lambda v: re.sub(r"^ \(proposed: (.+)\)$", r"（建议：\1）", v),
}

# (English detail as a regex, zh-CN template over its named groups); first match wins
_PATTERNS: list[tuple[str, str]] = [
    # login and roles
    (r"login required", "请先登录"),
    (r"wrong user name or password", "用户名或密码错误"),
    (r"too many failed logins from this address; try again in 15 minutes", "该地址登录失败次数过多，请 15 分钟后再试"),
    (r"(?:.+ )?needs role (?P<role>\w+) \(you are (?P<role2>\w+)\)", "需要{role}权限（当前为{role2}）"),
    (r"unknown role (?P<v>.+); roles: (?P<roles>.+)", "未知角色 {v}（可选：{roles}）"),
    (r"actor and role come from the login, not the body", "操作人和角色取自登录信息，不能写在请求里"),
    # requests
    (r"body must be a JSON object", "请求内容须为 JSON 对象"),
    (r"a number or date is out of range \(.+\)", "数值或日期超出范围"),
    (r"(?P<field>\w+): not base64", "{field}不是有效的 base64 编码"),
    (
        r"window_s must be positive and at most a week \(604800 s\), and max_points at least 2",
        "时间窗须为正数且不超过一周（604800 秒），点数至少为 2",
    ),
    (r"(?:device: )?unknown device (?P<v>.+)", "未知设备 {v}"),
    (r"device: (?P<v>.+) is not an excavation point \(exc\.inspection_danger does not apply\)",
     "{v} 不是基坑监测点，不能登记巡查危险"),
    # alarms
    (r"no alarm (?P<n>\d+)", "没有编号为 {n} 的报警"),
    (r"alarm (?P<n>\d+) cannot be acknowledged: it is still pending \(its on-delay has not run out\)",
     "报警 #{n} 仍在延时确认中，尚不能确认"),
    (r"alarm (?P<n>\d+) cannot be acknowledged: it is closed", "报警 #{n} 已关闭，不能确认"),
    (r"alarm (?P<n>\d+) cannot be acknowledged: it was already acknowledged by (?P<who>.+)",
     "报警 #{n} 已由 {who} 确认"),
    (r"a reset needs a comment: what the inspection found", "复位须填写说明：检查发现了什么"),
    (r"alarm (?P<n>\d+) is (?P<astate>\w+): only a latched alarm can be reset",
     "报警 #{n} 当前为{astate}，只有锁定待复位的报警才能复位"),
    (r"shelving needs a reason", "搁置须填写原因"),
    (r"shelve duration must be more than 0 s and at most (?P<s>[\d.e+]+) s", "搁置时长须大于 0 秒且不超过 {s} 秒"),
    (r"alarm (?P<n>\d+) is closed: only open alarms can be shelved", "报警 #{n} 已关闭，只有未关闭的报警才能搁置"),
    (r"alarm (?P<n>\d+) is not shelved", "报警 #{n} 未被搁置"),
    (r"a comment needs text", "备注不能为空"),
    (r"a suppression needs a reason", "屏蔽须填写原因"),
    # baselines
    (r"device and actor are required", "须指明设备和操作人"),
    (r"actor is required", "须指明操作人"),
    (r"a baseline must be a finite number, got (?P<v>.+)", "基准值须为有限数值（收到 {v}）"),
    (r"resetting a baseline needs a reason \(why\)", "重置基准值须填写原因"),
    (r"no baseline for (?P<d>[^/]+)/(?P<q>.+)", "{d} 的{q}尚无基准值"),
    (r"no reading of (?P<d>[^/]+)/(?P<q>.+) yet: give the value explicitly", "{d} 的{q}尚无读数，请直接填写基准值"),
    (r"unknown quantity (?P<v>.+?); known: .+", "未知监测量 {v}"),
    # hazards
    (r"no hazard (?P<n>\d+)", "没有编号为 {n} 的隐患"),
    (r"cannot (?P<action>\w+) hazard (?P<n>\d+): it is (?P<hstate>\w+); \w+ is allowed from (?P<hstates>.+)",
     "隐患 #{n} 当前为{hstate}，不能{action}（{hstates}时才可以）"),
    (r"unknown hazard action (?P<v>.+?); actions: .+", "未知的隐患操作 {v}"),
    (r"(?P<field>\w+)(?: \([^)]*\))? is required", "缺少必填项：{field}"),
    (r"basis article (?P<v>.+) must read like 8\(四\), 5\(四\)1 or 17",
     "判定依据条款 {v} 的写法不对，应写作 8(四)、5(四)1 或 17"),
    (r"source must be one of .+, not (?P<v>.+)", "隐患来源 {v} 不对，应为企业自查或抽查检查"),
    (r"alarm_id is required for a hazard from an alarm", "来自报警的隐患须指明报警编号"),
    (r"alarm_id (?P<n>\d+): there is no such alarm on this site", "本工地没有编号为 {n} 的报警"),
    (r"(?P<field>found_ns|reported_ns) lies in the future", "{field}晚于当前时间"),
    (r"klass must be one of .+, not (?P<v>.+)", "隐患等级 {v} 不对，应为一般或重大"),
    (r"a 2022 basis \(建质规〔2022〕2号, repealed\) is accepted only for hazards found before (?P<d>[\d-]+); "
     r"cite 建质规〔2024〕5号", "建质规〔2022〕2号已废止，只适用于 {d} 以前发现的隐患；请引用建质规〔2024〕5号"),
    (r"basis \(criteria version and article\) is required for a major hazard(?P<hint>.*)",
     "判定重大隐患须给出判定依据（标准版本和条款）{hint}"),
    (r"deadline (?P<d>\S+) is already past", "整改期限 {d} 已过"),
    (r"funds \(资金\) is required for a major hazard", "重大隐患须填写整改资金"),
    (r"funds must not be negative", "整改资金不能为负数"),
    (r"listing level must be county or city, not (?P<v>.+)", "督办级别 {v} 不对，应为县级或市级"),
    (r"only a major hazard can be put under listed supervision \(挂牌督办\)", "只有重大隐患才能挂牌督办"),
    (r"hazard (?P<n>\d+) is already listed at (?P<listing>\w+) level", "隐患 #{n} 已在{listing}挂牌督办"),
    (r"hazard (?P<n>\d+) is not a confirmed major hazard: no report is due",
     "隐患 #{n} 不是已判定的重大隐患，无需上报"),
    (r"hazard (?P<n>\d+) was already reported", "隐患 #{n} 已上报"),
    (r"the responsible person (?P<who>.+) cannot accept their own rectification",
     "整改责任人 {who} 不能验收自己的整改"),
    (r"(?P<who>.+) submitted this rectification and cannot also accept it", "{who} 提交了该整改，不能再由其本人验收"),
    (r"hazard (?P<n>\d+): its source alarm #(?P<a>\d+) is still (?P<astate>\w+); .+",
     "隐患 #{n} 的源报警 #{a} 仍为{astate}，报警未消除不能证明整改有效；如确需验收，请填写报警未消除时验收的理由"),
    (r"completed_on (?P<d>\S+) must lie between the day found and today", "完成日期 {d} 须在发现之日与今天之间"),
    (r"unknown time zone (?P<v>.+)", "未知时区 {v}"),
    (r"ledger formats: csv, xlsx", "台账格式只有 csv 和 xlsx"),
    # the site plan
    (r"this site has no plan drawing \(.+\)", "本工地没有平面图（站点文件未配置，管理员也未上传）"),
    (r"this site has no site\.plan \(width_m, height_m\) in its site file to put a drawing on",
     "站点文件没有给出平面图的尺寸（宽、高），无法放置平面图"),
    (r"content_b64: the drawing is over (?P<n>\d+) MiB", "平面图超过 {n} MiB"),
    (r"content_b64: not a PNG, JPEG or WebP image \(an SVG could carry script\)",
     "不是 PNG、JPEG 或 WebP 图片（SVG 可能携带脚本，不接受）"),
    # survey files (a surveyor's rows)
    (r"(?P<f>.+): not a readable XLSX file \(.+\)", "{f} 不是可读取的 XLSX 文件"),
    (r"(?P<f>.+): not UTF-8 or GB18030 text", "{f} 不是 UTF-8 或 GB18030 编码的文本"),
    (r"(?P<f>.+): not a readable CSV file \(.+\)", "{f} 不是可读取的 CSV 文件"),
    (r"no header row with a point column \(测点编号 / point\) and a time column \(观测时间 / 观测日期 / time\) in "
     r"the first (?P<n>\d+) rows", "前 {n} 行中没有含“测点编号”列和“观测时间”（或“观测日期”）列的表头"),
    (r"no worksheet holds a table: worksheet (?P<sheet>.+) is hidden in the workbook, not read \(unhide it in Excel "
     r"to import it\)", "可见的工作表中都没有数据表；{sheet}已隐藏，未读取（请在 Excel 中取消隐藏后再导入）"),
    (r"no worksheet holds a table: .+",
     "工作簿的各工作表中都没有数据表（前 10 行中没有含“测点编号”列和“观测时间”列的表头）"),
    (r"the file is empty", "文件为空"),
    (r"(?P<t>.+) is a time of day without a date \(no date column, 观测日期\)",
     "{t} 只有时刻，没有日期（缺少“观测日期”列）"),
    (r"the date column holds a time of day too \((?P<t>[^)]+)\) beside the time column's",
     "日期列中也写了时刻（{t}），与时间列重复"),
    (r"the time column's date \((?P<a>[^)]+)\) is not the date column's \((?P<b>[^)]+)\)",
     "时间列中的日期（{a}）与日期列（{b}）不一致"),
    (r"the worksheet is named for (?P<a>\w+), and the import's quantity is (?P<b>\w+)",
     "工作表名称对应的监测项目是 {a}，与导入时指定的 {b} 不一致"),
    (r"(?P<v>.+) is not a number", "{v} 不是数字"),
    (r"(?P<v>.+) is not a finite number", "{v} 不是有限数值"),
    (r"empty", "为空"),
    (r"(?P<v>.+) is not a time \(.+\)", "{v} 不是时间（应写作 2026-03-16 09:00、2026/03/16 09:00:00 或 2026-03-16）"),
    (r"no value column: give 累计变化量 \(cumulative change\) or 本次测值 \(value\)",
     "缺少数值列：请给出“累计变化量”或“本次测值”"),
    (r"(?:sheet (?P<sheet>.+?): )?more than (?P<n>\d+) rows: split the file", "{sheet}超过 {n} 行，请拆分文件"),
    (r"the file has a header but no rows", "文件只有表头，没有数据行"),
    (r"(?P<v>.+) is not a quantity this point reports \(.+\)", "{v} 不是该测点的监测项目"),
    (r"unit (?P<u>.+) does not convert to (?P<q>\w+)'s unit (?P<t>.+)", "单位 {u} 不能换算为{q}的单位 {t}"),
    (r"no item column \(监测项目\) and no quantity given for the import", "文件没有“监测项目”列，导入时也未指定监测量"),
    (r"unknown point (?P<v>.+) \(survey points: (?P<known>.+)\)", "未知测点 {v}（本工地测点：{known}）"),
    (r"the survey time is in the future", "观测时间晚于当前时间"),
    (r"the same survey time as (?:sheet '(?P<sheet>.+)', )?row (?P<r>\d+) for (?P<p>.+) \((?P<q>\w+)\)",
     "与{sheet}第 {r} 行的 {p}（{q}）观测时间相同"),
    (r"earlier than (?:sheet '(?P<sheet>.+)', )?row (?P<r>\d+) for (?P<p>.+) \((?P<q>\w+)\)",
     "早于{sheet}第 {r} 行的 {p}（{q}）观测时间"),
    (r"(?P<p>.+) \((?P<q>\w+)\) at this time was already imported \(import #(?P<n>\d+)\)",
     "{p}（{q}）该时间的数据已导入（第 {n} 次导入）"),
    (r"older than the last imported survey of (?P<p>.+) \((?P<q>\w+)\)", "早于 {p}（{q}）最近一次导入的观测时间"),
]  # fmt: skip
_COMPILED = [(re.compile(p), t) for p, t in _PATTERNS]


def say_zh(detail: str) -> str | None:
    """The zh-CN wording of an English refusal, or None when no pattern knows it."""
    for rx, template in _COMPILED:
        m = rx.fullmatch(detail)
        if m:
            said = {k: (_SAY[k](v) if k in _SAY else v) if v is not None else "" for k, v in m.groupdict().items()}
            return template.format(**said)
    return None


def message_zh(status: int, detail: str) -> str:
    """A refusal in Chinese: a known one in full, any other (a framework's own) as its kind."""
    return say_zh(detail) or _BY_STATUS.get(status, "请求未完成")


def fields_zh(locs: list[tuple[object, ...]]) -> str:
    """The fields a validation error names, as the forms name them (the leading 'body' / 'query' left out)."""
    names = []
    for loc in locs:
        parts = [str(x) for x in loc[1:] if not isinstance(x, int)] or [str(loc[0]) if loc else "body"]
        names.append(field_zh(parts[-1]))
    return "、".join(dict.fromkeys(names))
