"""Strict site config: every mistake is rejected with its YAML path and line; `sitegw check-config` says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, load_config

DEMO = Path(__file__).parents[2] / "simulators" / "sites" / "demo.yaml"

GOOD = """\
site: {id: s1, name: 测试工地}
lines:
  - {id: l1, type: modbus_tcp, host: 127.0.0.1, port: 1502}
brokers:
  - {id: b1, host: 127.0.0.1}
devices:
  - {id: TC-01, profile: tower_crane_tcp_v1, line: l1, unit_id: 1}
  - {id: FW-1, profile: formwork_mqtt_v1, broker: b1, topic: a/b/c/+/data, expected_interval_s: 5}
sink: {type: influxdb_v1, url: "http://127.0.0.1:8086", database: d}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "site.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, text))
    return str(ei.value)


def test_devices_that_set_the_same_fields_share_one_set_of_their_names(tmp_path: Path) -> None:
    # pydantic keeps the names of the fields a model was given; 2 000 devices kept 2 000 equal sets (1.4 MB)
    text = GOOD.replace(
        "  - {id: TC-01, profile: tower_crane_tcp_v1, line: l1, unit_id: 1}\n",
        "  - {id: TC-01, profile: tower_crane_tcp_v1, line: l1, unit_id: 1}\n"
        "  - {id: TC-02, profile: tower_crane_tcp_v1, line: l1, unit_id: 2}\n",
    )
    tc1, tc2, fw = load_config(write(tmp_path, text)).devices
    assert tc1.model_fields_set is tc2.model_fields_set == {"id", "profile", "line", "unit_id"}
    assert fw.model_fields_set is not tc1.model_fields_set
    renamed = tc1.model_copy(update={"name": "1号塔吊"})  # a copy changes its own set, never the shared one
    assert renamed.model_fields_set == {"id", "profile", "line", "unit_id", "name"}
    assert tc2.model_fields_set == {"id", "profile", "line", "unit_id"}


def test_demo_site_loads() -> None:
    cfg = load_config(DEMO)
    kinds = {cfg.kind_of(d).value for d in cfg.devices}
    assert kinds == {"tower_crane", "excavation", "formwork", "gas"}


def test_good_config(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert [d.id for d in cfg.devices] == ["TC-01", "FW-1"]
    assert cfg.spool.dir == tmp_path / "var" / "spool"  # relative to the config file


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("unit_id: 1}", "unit_id: 1, poll_intervall_s: 2}", "devices[0].poll_intervall_s (line 7): unknown field"),
        ("port: 1502", "port: 99999", "lines[0].port (line 3): Input should be less than or equal to 65535; got 99999"),
        ("line: l1, unit_id: 1", "line: l2, unit_id: 1", "devices[0].line (line 7): unknown line 'l2'"),
        ("profile: tower_crane_tcp_v1", "profile: crane_x", "devices[0].profile (line 7): unknown profile 'crane_x'"),
        ("name: 测试工地}", "name: 测试工地, timezone: Asia/Peking}", "site.timezone (line 1): unknown IANA time zone"),
        ("type: influxdb_v1", "type: influx", "sink (line 9): Input tag 'influx' found using 'type' does not match"),
        ("broker: b1, topic", "topic", "devices[1] (line 8): an MQTT device needs 'broker' and 'topic'"),
        (
            "unit_id: 1}",
            "unit_id: 1, timeout_s: 1.5}",
            "devices[0].timeout_s (line 7): 1.5 s must be below poll_interval_s = 1 s",
        ),
        ("{id: FW-1,", "{id: TC-01,", "devices[1].id (line 8): duplicate id 'TC-01', already devices[0]"),
        (", expected_interval_s: 5}", "}", "devices[1].expected_interval_s (line 8): required for an MQTT device"),
        (
            "a/b/c/+/data",
            "a/b/+/c/data",
            "devices[1].topic (line 8): profile formwork_mqtt_v1 takes the device id "
            "from topic level 3 (0-based), but level 3 of 'a/b/+/c/data' is neither",
        ),
        ("host: 127.0.0.1}\nd", "host: 127.0.0.1, protocol: 5}\nd", None),
        ("host: 127.0.0.1}\nd", "host: 127.0.0.1, protocol: 5, receive_maximum: 200}\nd", None),
        (
            "host: 127.0.0.1}\nd",
            "host: 127.0.0.1, receive_maximum: 200}\nd",
            "brokers[0] (line 5): receive_maximum is an MQTT 5 field (protocol: 5)",
        ),
        (
            "host: 127.0.0.1}\nd",
            "host: 127.0.0.1, protocol: 5, receive_maximum: 1}\nd",
            "brokers[0].receive_maximum (line 5): Input should be greater than or equal to 2",
        ),
        ("unit_id: 1}", "unit_id: -1}", "devices[0].unit_id (line 7): Input should be greater than or equal to 0"),
        (
            "type: modbus_tcp, host: 127.0.0.1, port: 1502}",
            "type: modbus_rtu, port: ttyS1, bytesize: 7}",
            "lines[0].bytesize (line 3): Modbus RTU characters have 8 data bits (7 is Modbus ASCII, not read here)",
        ),
        (
            "database: d}",
            "database: d, password_env: lower}",
            "sink.password_env (line 9): String should match pattern",
        ),
    ],
)
def test_errors_name_the_yaml_path(tmp_path: Path, old: str, new: str, expected: str | None) -> None:
    assert old in GOOD
    if expected is None:  # accepted
        load_config(write(tmp_path, GOOD.replace(old, new, 1)))
        return
    msg = error_of(tmp_path, GOOD.replace(old, new, 1))
    assert expected in msg, msg


def test_two_profiles_on_one_topic_filter(tmp_path: Path) -> None:
    extra = "  - {id: G-1, profile: gas_4in1_mqtt_v1, broker: b1, topic: a/b/c/+/data, expected_interval_s: 5}\n"
    msg = error_of(tmp_path, GOOD.replace("sink:", extra + "sink:"))
    assert "devices[2].topic (line 9): 'a/b/c/+/data' is already used by a formwork_mqtt_v1 device" in msg


def test_profile_with_unconvertible_unit_is_rejected(tmp_path: Path) -> None:
    prof = tmp_path / "profiles"
    prof.mkdir()
    (prof / "bad_unit.yaml").write_text(
        "id: bad_unit\nkind: gas\ntitle: t\ntransport: modbus\naddress_base: pdu\n"
        "points:\n  - {quantity: co, table: holding, address: 0, unit: furlong}\n"
    )
    msg = error_of(tmp_path, GOOD + "profile_dirs: [profiles]\n")
    assert (
        "bad_unit.yaml: invalid profile" in msg
        and "co: unit 'furlong' does not convert to the catalog unit 'ppm'" in msg
    )


def test_missing_section(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD.split("sink:")[0])
    assert "sink (line 1): required field is missing" in msg


def test_not_yaml(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "site: [unclosed\n")
    # the message is the Python reader's, with the line and its excerpt, though libyaml read the file first
    assert "not valid YAML" in msg and "line 2" in msg and "^" in msg


def test_a_file_not_in_utf8_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "site.yaml"
    p.write_bytes(GOOD.replace("测试工地", "x").encode() + "# 测试\n".encode("gbk"))  # GBK after the last line
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert str(ei.value) == f"{p}: not UTF-8: byte 0xb2 at line {GOOD.count(chr(10)) + 1} (save the file as UTF-8)"


@pytest.mark.parametrize("site", [DEMO, DEMO.parents[2] / "docker" / "site.example.yaml"])
def test_libyaml_reads_a_site_as_the_python_reader_does(monkeypatch: pytest.MonkeyPatch, site: Path) -> None:
    from gateway.config import loader

    assert loader._FastLoader is not loader._SafeLoader, "PyYAML without libyaml: the fast reader is not tried"
    fast = load_config(site)
    monkeypatch.setattr(loader, "_FastLoader", loader._SafeLoader)
    assert fast == load_config(site)


def test_a_python_tag_is_refused_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    msg = error_of(tmp_path, f"site: !!python/object/apply:os.mkdir [{str(marker)!r}]\n")
    assert "not valid YAML" in msg and "python/object/apply" in msg and not marker.exists()


def test_a_file_libyaml_reads_and_python_cannot_compose_still_names_its_problems(tmp_path: Path) -> None:
    # 600 levels: within libyaml's limit (1 000), past what Python's recursion allows its composer; the problem is
    # still reported, without a line (PyYAML alone refused the file: "nested too deeply")
    deep = "{a: " * 600 + "1" + "}" * 600
    msg = error_of(tmp_path, GOOD.replace("site: {id: s1, name: 测试工地}", f"site: {{id: s1, name: x, z: {deep}}}"))
    assert "  site.z: unknown field" in msg


def test_check_config_cli(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(write(tmp_path, GOOD))],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "FC3 holding 0..14 (15)" in ok.stdout and "subscribe a/b/c/+/data" in ok.stdout
    # the default alarm rules of the site's kinds, with their sources, and what the project still owes
    assert "tc.moment_ratio" in ok.stdout and "预警 ≥ 90 %; 报警 > 100 %; 危险 ≥ 110 %" in ok.stdout
    assert "rule(s) lack project values" in ok.stdout
    assert "device FW-1: rule fw.pole_tilt needs a project value for 报警 (专项施工方案 [U])" in ok.stdout
    assert "device FW-1: fw.axial_force needs design_values.axial_force" in ok.stdout
    assert "device TC-01: rule fw." not in ok.stdout  # rules follow the device kind
    assert "no escalation policy" in ok.stdout
    bad = write(tmp_path, GOOD.replace("unit_id: 1}", "unit_id: 300}"))
    res = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(bad)], capture_output=True, text=True
    )
    assert res.returncode == 2
    assert "devices[0].unit_id (line 7): Input should be less than or equal to 255; got 300" in res.stderr


def test_site_plan_positions_and_drawing_are_checked(tmp_path: Path) -> None:
    import yaml

    from tests.sites import tiny_png

    doc = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    doc["site"]["plan"]["image"] = str(DEMO.parent / doc["site"]["plan"]["image"])
    cfg = load_config(write(tmp_path, yaml.safe_dump(doc, allow_unicode=True)))
    assert cfg.site.plan is not None and cfg.site.plan.image is not None and cfg.site.plan.image.is_file()
    # the demo places every device on its drawing
    assert [d.id for d in cfg.devices if d.position is None] == []

    def refused(change: Any, match: str) -> None:
        d = yaml.safe_load(yaml.safe_dump(doc))
        change(d)
        with pytest.raises(ConfigError, match=match):
            load_config(write(tmp_path, yaml.safe_dump(d, allow_unicode=True)))

    refused(lambda d: d["devices"][0].update(position={"x_m": 250, "y_m": 10}),
            r"devices\[0\]\.position \(line \d+\): \(250, 10\) m lies outside the plan \(200 x 140 m\)")  # fmt: skip
    refused(lambda d: d["site"].pop("plan"), r"position \(line \d+\): a position needs site.plan")
    missing = r"site.plan.image \(line \d+\): .*nowhere.png does not exist"
    refused(lambda d: d["site"]["plan"].update(image="nowhere.png"), missing)
    (tmp_path / "plan.svg").write_text("<svg/>")
    svg = r"site.plan.image \(line \d+\): plan.svg: use a PNG, JPEG or WebP drawing"
    refused(lambda d: d["site"]["plan"].update(image="plan.svg"), svg)
    refused(lambda d: d["devices"][0].update(jib_length_m=0), r"jib_length_m")
    # a drawing relative to the site file
    doc["site"]["plan"]["image"] = tiny_png(tmp_path / "drawing.png").name
    assert (
        load_config(write(tmp_path, yaml.safe_dump(doc, allow_unicode=True))).site.plan.image
        == tmp_path / "drawing.png"
    )  # type: ignore[union-attr]


def test_every_profile_transport_has_exactly_one_driver() -> None:
    """The registry is the one place a transport is known: each profile model's transport has its driver, whose
    profile model is that one, and every built-in profile is read by one of them."""
    from typing import get_args

    from drivers.profile import AnyProfile, builtin_profiles
    from drivers.registry import DRIVERS, driver_of

    models = {get_args(m.model_fields["transport"].annotation)[0]: m for m in get_args(AnyProfile)}
    assert {t: d.profile for t, d in DRIVERS.items()} == models
    assert {driver_of(p).transport for p in builtin_profiles().values()} == set(DRIVERS)
    assert [t for t, d in DRIVERS.items() if d.late_data] == ["survey"]


def test_each_driver_checks_its_own_devices_and_claims_across_the_site(tmp_path: Path) -> None:
    """A survey point refuses a Modbus line; a second device on one unit id is named by the one that has it."""
    survey = "  - {id: ZQT-1, profile: excavation_survey_v1, line: l1, expected_interval_s: 86400}\n"
    msg = error_of(tmp_path, GOOD.replace("sink:", survey + "sink:"))
    assert "devices[2] (line 9): a survey point takes no 'line'/'unit_id'/'broker'/'topic'" in msg, msg
    twin = "  - {id: TC-02, profile: tower_crane_tcp_v1, line: l1, unit_id: 1}\n"
    msg = error_of(tmp_path, GOOD.replace("sink:", twin + "sink:"))
    assert "devices[2].unit_id (line 9): 1 on line l1 is already TC-01" in msg, msg
    cfg = load_config(write(tmp_path, GOOD.replace("sink:", survey.replace("line: l1, ", "") + "sink:")))
    assert cfg.clock_limits()["ZQT-1"][1] > 365 * 86400 > cfg.clock_limits()["FW-1"][1]  # surveys come late


def test_the_hazard_workflow_keeps_the_site_s_time_zone(tmp_path: Path) -> None:
    """The hazard clocks' "same day" and the ledger's date range (the site's) must count the same local days: the
    workflow takes site.timezone, and a different hazards.timezone is refused, not kept apart."""
    site = GOOD.replace("name: 测试工地}", "name: 测试工地, timezone: Asia/Urumqi}")
    assert load_config(write(tmp_path, site)).alarm_setup().hazards.timezone == "Asia/Urumqi"
    same = load_config(write(tmp_path, site + "hazards: {timezone: Asia/Urumqi}\n"))
    assert same.alarm_setup().hazards.timezone == "Asia/Urumqi"
    err = error_of(tmp_path, site + "hazards: {timezone: Asia/Shanghai}\n")
    assert "hazards.timezone (line 10): 'Asia/Shanghai' differs from site.timezone 'Asia/Urumqi'" in err
