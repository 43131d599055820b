"""One vocabulary (zh-CN and English) for the states, roles, qualities, kinds and sources people see anywhere."""

from __future__ import annotations

import re

# (zh, en) per term; keys are "<group>_<value>" as the console looks them up
_TERMS: dict[str, tuple[str, str]] = {
    # alarm levels (GB 50497 / GB/T 50493 wording)
    "level_0": ("正常", "Normal"),
    "level_1": ("预警", "Pre-warning"),
    "level_2": ("报警", "Alarm"),
    "level_3": ("危险", "Danger"),
    # alarm states (ISA-18.2)
    "state_pending": ("延时确认中", "pending"),
    "state_active_unacked": ("未确认", "unacknowledged"),
    "state_active_acked": ("已确认", "acknowledged"),
    "state_rtn_unacked": ("已恢复未确认", "cleared, unacknowledged"),
    "state_latched": ("锁定待复位", "latched"),
    "state_normal": ("正常", "normal"),
    # hazard records: 发现 → 判定 → 整改 → 复查 → 销号 (one word per state, ledger and console alike)
    "hz_found": ("待核实", "found"),
    "hz_confirmed": ("已判定", "classified"),
    "hz_dismissed": ("已排除", "dismissed"),
    "hz_rectifying": ("整改中", "rectifying"),
    "hz_submitted": ("待复查", "awaiting re-inspection"),
    "hz_closed": ("已销号", "closed"),
    "hz_reopened": ("已重新打开", "reopened"),
    "hzclass_general": ("一般", "general"),
    "hzclass_major": ("重大", "major"),
    "hzsource_self_check": ("企业自查", "self-check"),  # the Changji 附件2 column's wording
    "hzsource_inspection": ("抽查检查", "inspection"),
    "listing_none": ("", ""),
    "listing_county": ("县级", "county"),
    "listing_city": ("市级", "city"),
    # roles
    "role_viewer": ("查看", "viewer"),
    "role_officer": ("安全员", "safety officer"),
    "role_manager": ("项目经理", "manager"),
    "role_admin": ("管理员", "administrator"),
    # reading quality
    "q_good": ("正常", "good"),
    "q_uncertain": ("可疑", "uncertain"),
    "q_bad": ("故障", "bad"),
    "q_not_ready": ("未就绪", "not ready"),
    # device kinds
    "kind_tower_crane": ("塔吊", "Tower crane"),
    "kind_excavation": ("深基坑", "Excavation"),
    "kind_formwork": ("高支模", "Formwork"),
    "kind_gas": ("有限空间气体", "Gas detector"),
    "kind_construction_elevator": ("施工升降机", "Construction elevator"),
    "kind_environment": ("扬尘噪声", "Dust and noise"),
}

ZH: dict[str, str] = {k: zh for k, (zh, _) in _TERMS.items()}
EN: dict[str, str] = {k: en for k, (_, en) in _TERMS.items()}

STATUS_ZH = {k.removeprefix("hz_"): v for k, v in ZH.items() if k.startswith("hz_")}
CLASS_ZH = {k.removeprefix("hzclass_"): v for k, v in ZH.items() if k.startswith("hzclass_")}
SOURCE_ZH = {k.removeprefix("hzsource_"): v for k, v in ZH.items() if k.startswith("hzsource_")}
LISTING_ZH = {k.removeprefix("listing_"): v for k, v in ZH.items() if k.startswith("listing_")}

# The rule sources as a supervisor reads them. A standard's number stays as it is (GB/T 50493-2019 5.5.2); the
# project's own words for where a number comes from are said in Chinese; the confidence tag ([S+], [rec]) is for the
# details view, not the banner.
SOURCE_WORDS: dict[str, str] = {
    "domain.md recommendation": "工程推荐值",
    "vendor and local practice": "厂家及行业惯例",
    "device configuration (manufacturer's manual)": "设备配置（厂家说明书）",
    "moment limiter cuts hoist-up": "力矩限制器切断起升",
    "moment limiter < 110 %": "力矩限制器 < 110 %",
    "load limiter < 110 %": "起重量限制器 < 110 %",
    "moment limiter": "力矩限制器",
    "load limiter": "起重量限制器",
    "verticality <= 4/1000": "塔身垂直度 ≤ 4/1000",
    "calm wind <= 3 m/s": "风速 ≤ 3 m/s 时测量",
    "limiter not working": "限位器失效",
    "practice pattern": "行业惯例",
    "Table 8.0.4 note": "表 8.0.4 注",
    "load ≈ 0": "空载",
    "frozen": "读数冻结",
    "demo values": "演示值",
    "domain.md": "工程推荐值",
}
_TAG = re.compile(r"\s*\[(?:P|S\+|S|R|rec|U)\]\s*$")
_WORDS = re.compile("|".join(re.escape(w) for w in sorted(SOURCE_WORDS, key=len, reverse=True)))


_IN_A_ROW = re.compile(r"(\d+) days in a row")

# the sections of our own design notes mean nothing on site
_OWN_SECTIONS = re.compile(r"(工程推荐值)\s*§[\d.]+(?:\s*,\s*§?[\d.]+)*")


def cite_zh(cite: str) -> str:
    """A rule source for zh-CN readers: the project's English words in Chinese, the confidence tag left out."""
    text = _WORDS.sub(lambda m: SOURCE_WORDS[m.group(0)], _TAG.sub("", cite))
    text = _IN_A_ROW.sub(r"连续 \1 天", text)  # a run of days (alerting/binding.py `_days`)
    return _OWN_SECTIONS.sub(r"\1", text).strip()
