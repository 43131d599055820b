"""The site file's strictness (docs/configuration.md, Ground rules: "Strict. ... Nothing is repaired silently";
"Errors name the YAML path and line"), from a review of it: settings that were accepted silently although they did
nothing or contradicted another, and errors that came without their YAML path and line.
"""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from alerting.overrides import resolve_rules
from alerting.rules import default_rules
from gateway.cli import check_config
from gateway.config import ConfigError, load_config

S = "source: {standard: 某基坑监测方案, clause: 表3, confidence: P}"

# devices[0] TC-01 (line 7), [1] FW-1 (line 8), [2] GAS-1 (line 9), [3] PIT-1 (line 10), [4] PIT-ZL (line 11)
BASE = """\
site: {id: s1, name: 测试工地}
lines:
  - {id: l1, type: modbus_tcp, host: 127.0.0.1, port: 1502}
brokers:
  - {id: b1, host: 127.0.0.1}
devices:
  - {id: TC-01, profile: tower_crane_tcp_v1, line: l1, unit_id: 1}
  - {id: FW-1, profile: formwork_mqtt_v1, broker: b1, topic: a/b/c/+/data, expected_interval_s: 5}
  - {id: GAS-1, profile: gas_4in1_mqtt_v1, broker: b1, topic: g/+, expected_interval_s: 5}
  - {id: PIT-1, profile: excavation_displacement_rtu_v1, line: l1, unit_id: 2, poll_interval_s: 2}
  - {id: PIT-ZL, profile: excavation_strut_water_rtu_v1, line: l1, unit_id: 3, poll_interval_s: 2}
sink: {type: influxdb_v1, url: "http://127.0.0.1:8086", database: d}
"""

ESCALATION = """\
escalation:
  people: [{id: a, name: 张安全}]
  duty: [{role: safety_officer, people: [a]}]
  channels: [{id: siren, type: mqtt, broker: b1, topic: sitegw/siren}]
"""


def dev(device_id: str, extra: str, text: str = BASE) -> str:
    """BASE with `extra` added to the flow mapping of device `device_id`."""
    lines = text.splitlines(keepends=True)
    for i, ln in enumerate(lines):
        if f"{{id: {device_id}," in ln:
            lines[i] = ln.rstrip().removesuffix("}") + f", {extra}}}\n"
            return "".join(lines)
    raise AssertionError(device_id)


def override(body: str, text: str = BASE) -> str:
    return text + f"rules:\n  overrides:\n    - {{{body}, {S}}}\n"


def refused(tmp_path: Path, text: str) -> str:
    p = tmp_path / "site.yaml"
    p.write_text(text, encoding="utf-8")
    try:
        load_config(p)
    except ConfigError as err:
        return str(err)
    pytest.fail("accepted silently (check-config: OK, exit 0)")


def test_base_is_good(tmp_path: Path) -> None:
    p = tmp_path / "site.yaml"
    p.write_text(BASE, encoding="utf-8")
    assert len(load_config(p).devices) == 5


# ---- 1. device fields that mean nothing for the device's kind ---------------------------------------------------


@pytest.mark.parametrize(
    ("device", "extra", "path"),
    [
        ("TC-01", f"warning_values: {{horizontal_displacement: {{cumulative: 30, {S}}}}}", "devices[0].warning_values"),
        ("GAS-1", f"warning_values: {{horizontal_displacement: {{cumulative: 30, {S}}}}}", "devices[2].warning_values"),
        ("TC-01", "excavation_depth_m: 12", "devices[0].excavation_depth_m"),
        ("PIT-1", "load_chart: [{radius_m: 2.5, rated_load_t: 6}]", "devices[3].load_chart"),
        ("PIT-1", "wind_limit_ms: 20", "devices[3].wind_limit_ms"),
        ("GAS-1", "jib_length_m: 50", "devices[2].jib_length_m"),
    ],
)
def test_field_of_another_device_kind_is_refused(tmp_path: Path, device: str, extra: str, path: str) -> None:
    assert path in refused(tmp_path, dev(device, extra))


@pytest.mark.parametrize(
    ("device", "extra", "path", "why"),
    [
        # an MQTT device delivers when it publishes: these were accepted and did nothing
        ("GAS-1", "poll_interval_s: 2", "devices[2].poll_interval_s", "publishes over MQTT"),
        ("FW-1", "timeout_s: 0.4", "devices[1].timeout_s", "publishes over MQTT"),
        ("GAS-1", "retries: 2", "devices[2].retries", "publishes over MQTT"),
        # a survey point is surveyed when it is
        ("SV-1", "retries: 0", "devices[5].retries", "is surveyed"),
        # a Modbus device is found by its line and unit id, never by the name it gives itself
        ("TC-01", "match: SN2024001", "devices[0].match", "line and unit_id"),
    ],
)
def test_a_setting_of_another_way_of_reading_is_refused(
    tmp_path: Path, device: str, extra: str, path: str, why: str
) -> None:
    text = BASE.replace("sink:", "  - {id: SV-1, profile: excavation_survey_v1, expected_interval_s: 86400}\nsink:")
    err = refused(tmp_path, dev(device, extra, text))
    assert path in err and why in err


def test_polled_settings_on_a_modbus_device_and_match_on_an_mqtt_one_are_kept(tmp_path: Path) -> None:
    p = tmp_path / "site.yaml"
    text = dev("PIT-1", "timeout_s: 0.4, retries: 2", dev("GAS-1", "match: SN2024001"))
    p.write_text(text, encoding="utf-8")
    cfg = load_config(p)
    pit = next(d for d in cfg.devices if d.id == "PIT-1")
    gas = next(d for d in cfg.devices if d.id == "GAS-1")
    assert (pit.poll_interval_s, pit.timeout_s, pit.retries, gas.key) == (2, 0.4, 2, "SN2024001")


# ---- 2. design_values / warning_values that no rule of the device can ever use -------------------------------


@pytest.mark.parametrize(
    ("device", "extra", "path"),
    [
        # a displacement gauge reports no strut force: exc.strut_force never runs on it
        ("PIT-1", "design_values: {strut_force: 3000}", "devices[3].design_values"),
        ("TC-01", "design_values: {axial_force: 40}", "devices[0].design_values"),
        # reported, but fw.pole_tilt compares the value itself: no %-of-design rule reads it
        ("FW-1", "design_values: {pole_tilt: 3}", "devices[1].design_values"),
        # the displacement gauge reports no groundwater level
        ("PIT-1", f"warning_values: {{groundwater_level: {{cumulative: 1, {S}}}}}", "devices[3].warning_values"),
        # the strut gauge reports strut_force, but exc.strut_force is %-of-design: a 预警值 for it is never read
        ("PIT-ZL", f"warning_values: {{strut_force: {{cumulative: 2100, {S}}}}}", "devices[4].warning_values"),
    ],
)
def test_design_or_warning_value_no_rule_uses_is_refused(tmp_path: Path, device: str, extra: str, path: str) -> None:
    assert path in refused(tmp_path, dev(device, extra))


@pytest.mark.parametrize("value", ["0", "-40", ".nan", ".inf"])
def test_design_value_is_positive_and_finite(tmp_path: Path, value: str) -> None:
    # 0 reads as "not given"; -40 makes fw.axial_force (high) unreachable; NaN and inf make the % NaN or 0: no alarm
    assert "devices[1].design_values" in refused(tmp_path, dev("FW-1", f"design_values: {{axial_force: {value}}}"))


def test_percent_of_h_on_a_quantity_that_is_not_a_length_names_its_path(tmp_path: Path) -> None:
    # before: "(top level) (line 1): no conversion from 'm' to 'kN'"
    extra = f"excavation_depth_m: 12, warning_values: {{strut_force: {{cumulative_percent_h: 0.2, {S}}}}}"
    msg = refused(tmp_path, dev("PIT-ZL", extra))
    assert "devices[4].warning_values" in msg and "(line 11)" in msg, msg


# ---- 3. NaN / inf where no bound catches them ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path"),
    [
        # `up` never drops
        (BASE.replace("expected_interval_s: 5}", "expected_interval_s: .inf}", 1), "devices[1].expected_interval_s"),
        # change / inf * 100 = 0 %: never 预警
        (
            dev("PIT-1", f"warning_values: {{horizontal_displacement: {{cumulative: .inf, {S}}}}}"),
            "devices[3].warning_values.horizontal_displacement.cumulative",
        ),
        (
            dev("PIT-1", f"warning_values: {{horizontal_displacement: {{rate_per_day: .inf, {S}}}}}"),
            "devices[3].warning_values.horizontal_displacement.rate_per_day",
        ),
        # load_ratio = load / inf = 0 %
        (dev("TC-01", "load_chart: [{radius_m: 2.5, rated_load_t: .inf}]"), "devices[0].load_chart[0].rated_load_t"),
        # a dead device is never probed again
        (BASE + "modbus: {breaker_max_backoff_s: .inf}\n", "modbus.breaker_max_backoff_s"),
        # x >= nan is never true: gas.lel 报警 disabled
        (override("rule: gas.lel, thresholds: {2: .nan}"), "rules.overrides[0].thresholds"),
        (override("rule: gas.lel, thresholds: {3: .inf}"), "rules.overrides[0].thresholds"),
        (override("rule: gas.lel, deadband: .inf"), "rules.overrides[0].deadband"),  # never clears
        (override("rule: gas.lel, on_delay_s: .inf"), "rules.overrides[0].on_delay_s"),  # never raised
        (override("rule: gas.lel, off_delay_s: .inf"), "rules.overrides[0].off_delay_s"),  # never cleared
        # the gate never opens
        (
            override("rule: gas.lel, when: [{quantity: o2, op: '>=', value: .nan}]"),
            "rules.overrides[0].when[0].value",
        ),
        (
            BASE + ESCALATION + "  policies: [{id: p, tiers: [{after_s: .inf, roles: [safety_officer], "
            "channels: [siren]}]}]\n",
            "escalation.policies[0].tiers[0].after_s",
        ),
    ],
)
def test_nan_and_inf_are_refused(tmp_path: Path, text: str, path: str) -> None:
    assert path in refused(tmp_path, text)


# ---- 4. YAML booleans taken as numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (BASE.replace("unit_id: 1}", "unit_id: yes}"), "devices[0].unit_id"),  # polled as unit 1
        (BASE.replace("expected_interval_s: 5}", "expected_interval_s: yes}", 1), "devices[1].expected_interval_s"),
        (dev("PIT-1", "retries: no"), "devices[3].retries"),
        (
            dev("PIT-1", f"warning_values: {{horizontal_displacement: {{cumulative: yes, {S}}}}}"),
            "devices[3].warning_values.horizontal_displacement.cumulative",
        ),  # 1 mm
        (override("rule: gas.lel, thresholds: {2: yes}"), "rules.overrides[0].thresholds"),  # LEL 1 %
        (dev("TC-01", "wind_limit_ms: yes"), "devices[0].wind_limit_ms"),  # 1 m/s
    ],
)
def test_yaml_boolean_is_not_a_number(tmp_path: Path, text: str, path: str) -> None:
    assert path in refused(tmp_path, text)


def test_quoted_number_is_still_a_number(tmp_path: Path) -> None:
    # the review's test_quoted_number_is_not_converted_silently is left out: a quoted number means the number
    # (only a boolean is refused), and site files written by tools quote some
    p = tmp_path / "site.yaml"
    text = BASE.replace("poll_interval_s: 2}", "poll_interval_s: '2'}", 1).replace("unit_id: 2,", "unit_id: '2',")
    p.write_text(override("rule: gas.lel, thresholds: {2: '20'}", text), encoding="utf-8")
    cfg = load_config(p)
    d = cfg.devices[3]
    assert (d.unit_id, d.poll_interval_s, cfg.rules.overrides[0].thresholds) == (2, 2.0, {2: 20})


# ---- 5. YAML the loader reads wrongly or reports without its place ----------------------------------------------


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    # before: the second `devices:` replaces the first: four of the five devices vanish, check-config says OK
    text = BASE + "devices:\n  - {id: X, profile: gas_4in1_mqtt_v1, broker: b1, topic: g/+, expected_interval_s: 5}\n"
    msg = refused(tmp_path, text)
    assert "devices" in msg and "line 13" in msg, msg


def test_a_device_key_given_twice_is_refused(tmp_path: Path) -> None:
    # before: unit_id 2 is taken and unit_id 1 forgotten
    msg = refused(tmp_path, BASE.replace("line: l1, unit_id: 2,", "line: l1, unit_id: 2, unit_id: 4,"))
    assert "unit_id" in msg and "line 10" in msg, msg


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            BASE.replace(
                "sink:",
                "  - {id: GAS-1, profile: gas_4in1_mqtt_v1, broker: b1, topic: g/+, match: Z, "
                "expected_interval_s: 5}\nsink:",
            ),
            "devices[5].id (line 12)",
        ),
        (
            BASE.replace("  - {id: b1, host: 127.0.0.1}\n", "  - {id: b1, host: 127.0.0.1}\n  - {id: b1, host: h2}\n"),
            "brokers[1].id (line 6)",
        ),
        (
            BASE.replace("port: 1502}\n", "port: 1502}\n  - {id: l1, type: modbus_tcp, host: h3}\n"),
            "lines[1].id (line 4)",
        ),
    ],
)
def test_duplicate_id_names_its_entry_and_line(tmp_path: Path, text: str, where: str) -> None:
    # before: "(top level) (line 1): devices: duplicate id 'GAS-1'"
    msg = refused(tmp_path, text)
    assert where in msg, msg


# ---- 6. MQTT: what paho refuses at run time, and a password nobody sends --------------------------------------------


@pytest.mark.parametrize("topic", ["'g/#/x'", "'g/+x'", "''", '"g/\\0"'])
def test_topic_is_a_valid_mqtt_filter(tmp_path: Path, topic: str) -> None:
    # before: OK; `sitegw run`: paho's subscribe raises ValueError('Invalid subscription filter.') in the session task
    # (NUL in YAML double quotes: the review's 'g/\0', single-quoted, was a backslash and a zero, a valid topic)
    assert "devices[2].topic" in refused(tmp_path, BASE.replace("topic: g/+,", f"topic: {topic},"))


@pytest.mark.parametrize("topic", ['"sitegw/siren\\n"', '"siren\\0"', '"a\\tb"'])
def test_escalation_mqtt_topic_with_a_control_character_is_refused(tmp_path: Path, topic: str) -> None:
    # before: OK; at every alarm Mosquitto closed the channel's connection on the malformed topic, and the siren
    # message was retried for good
    text = BASE + ESCALATION.replace("topic: sitegw/siren", f"topic: {topic}")
    err = refused(tmp_path, text)
    assert "escalation.channels[0].topic" in err and "control character" in err


@pytest.mark.parametrize("topic", ["'sitegw/+/dead'", "'dl/#'", "''"])
def test_dead_letter_topic_is_a_publish_topic(tmp_path: Path, topic: str) -> None:
    # before: OK; the first dead letter: paho raises ValueError('Publish topic cannot contain wildcards.'), which is no
    # MqttError: the session task fails (escalation.channels[].topic already refuses wildcards)
    text = BASE.replace("{id: b1, host: 127.0.0.1}", f"{{id: b1, host: 127.0.0.1, dead_letter_topic: {topic}}}")
    assert "brokers[0].dead_letter_topic" in refused(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        # aiomqtt calls username_pw_set only with a username: the password is dropped (MQTT 3.1.1 §3.1.2.9)
        (
            BASE.replace("{id: b1, host: 127.0.0.1}", "{id: b1, host: 127.0.0.1, password_env: SITEGW_MQTT_PW}"),
            "brokers[0]",
        ),
        # InfluxV1Writer sends basic auth only with a username
        (BASE.replace("database: d}", "database: d, password_env: SITEGW_INFLUX_PW}"), "sink"),
        # nats-py sends user and password only together: either alone never reached the cluster
        (BASE + "uplink: {servers: ['nats://127.0.0.1:4222'], password_env: SITEGW_NATS_PW}\n", "uplink"),
        (BASE + "uplink: {servers: ['nats://127.0.0.1:4222'], user: site01}\n", "uplink"),
    ],
)
def test_password_without_user_name_is_refused(tmp_path: Path, text: str, path: str) -> None:
    # `sitegw run` still demands the variable, then never sends it
    assert path in refused(tmp_path, text)


# ---- 7. device settings that contradict the device's profile or each other -----------------------------------------


@pytest.mark.parametrize(
    ("device", "extra", "path"),
    [
        # tower_crane_tcp_v1 has no register clock: every poll is stamped with the gateway's time
        ("TC-01", "device_clock: {max_ahead_s: 60}", "devices[0].device_clock"),
        # the device's own time replaced by the receive time: nothing left to check
        ("GAS-1", "timestamp: {format: receive}, device_clock: {max_ahead_s: 60}", "devices[2].device_clock"),
    ],
)
def test_device_clock_on_a_device_stamped_by_the_gateway(tmp_path: Path, device: str, extra: str, path: str) -> None:
    assert path in refused(tmp_path, dev(device, extra))


def test_liveness_limit_shorter_than_the_poll_interval_is_refused(tmp_path: Path) -> None:
    # stale after 0.5 x 3 = 1.5 s, polled every 2 s: `up` falls to 0 between every two polls (health.stale chatters)
    assert "devices[3].expected_interval_s" in refused(tmp_path, dev("PIT-1", "expected_interval_s: 0.5"))


@pytest.mark.parametrize("value", ["0", "20270630"])
def test_calibration_due_as_a_number_is_refused_clearly(tmp_path: Path, value: str) -> None:
    # before: 0 is 1970-01-01 (calibration overdue for ever); 20270630 gets "Datetimes provided to dates should have
    # zero time" (it is read as Unix seconds)
    msg = refused(tmp_path, dev("GAS-1", f"calibration_due: {value}"))
    assert "devices[2].calibration_due" in msg and "YYYY-MM-DD" in msg, msg


# ---- 8. rules.overrides that do nothing or can never end -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ("rule: gas.lel, devices: [], thresholds: {2: 20}", "rules.overrides[0].devices"),  # applies to nobody
        ("rule: gas.lel", "rules.overrides[0]"),  # only a source: changes nothing
        # PIT-1 (displacement) reports no strut_force: the rule is not bound to it, the override is dropped
        ("rule: exc.strut_force, devices: [PIT-1], thresholds: {1: 60}", "rules.overrides[0].devices"),
        # GAS-1 never reports wind_speed: a gate quantity never seen keeps the gate shut, gas.lel never evaluated
        (
            "rule: gas.lel, devices: [GAS-1], when: [{quantity: wind_speed, op: '<=', value: 20}]",
            "rules.overrides[0].when[0]",
        ),
    ],
)
def test_override_that_changes_nothing_is_refused(tmp_path: Path, body: str, path: str) -> None:
    assert path in refused(tmp_path, override(body))


INCLINOMETER = BASE.replace(
    "sink:",
    "  - {id: INC-1, profile: excavation_inclinometer_rtu_v1, line: l1, unit_id: 4, poll_interval_s: 60}\nsink:",
)


@pytest.mark.parametrize("gate", ["deep_displacement", "deep_displacement_d12m"])
def test_gate_on_a_depth_family_by_a_name_its_readings_never_have_is_refused(tmp_path: Path, gate: str) -> None:
    # before: accepted (the device provides the family's base name), and the gate stayed shut: the inclinometer's
    # readings are deep_displacement_d2m ... _d10m, never the base name nor a depth it does not read
    body = f"rule: exc.deep_displacement_rate, devices: [INC-1], when: [{{quantity: {gate}, op: '<=', value: 50}}]"
    msg = refused(tmp_path, override(body, INCLINOMETER))
    assert "rules.overrides[0].when[0]" in msg and "deep_displacement_d2m" in msg, msg


def test_gate_on_a_depth_the_device_reads_is_accepted(tmp_path: Path) -> None:
    gate = "{quantity: deep_displacement_d4m, op: '<=', value: 50}"
    body = f"rule: exc.deep_displacement_rate, devices: [INC-1], when: [{gate}]"
    p = tmp_path / "site.yaml"
    p.write_text(override(body, INCLINOMETER), encoding="utf-8")
    cfg = load_config(p)
    rules = resolve_rules(default_rules(), cfg.rules, cfg.device_contexts())["INC-1"]
    (rule,) = [r for r in rules if r.id == "exc.deep_displacement_rate"]
    assert [c.quantity for c in rule.when] == ["deep_displacement_d4m"]


@pytest.mark.parametrize(
    "body",
    [
        "rule: gas.lel, deadband: 30",  # held while LEL > 25 - 30 = -5 %LEL: always
        "rule: tc.tilt_x, deadband: 5",  # held while |tilt| > 4 - 5: always
        "rule: gas.o2_low, deadband: 15",  # held while O2 < 19.5 + 15 = 34.5 %VOL (the catalog's range ends at 30)
    ],
)
def test_deadband_that_never_lets_the_alarm_clear_is_refused(tmp_path: Path, body: str) -> None:
    assert "rules.overrides[0]" in refused(tmp_path, override(body))


@pytest.mark.parametrize(("design", "refused_"), [(100, True), (30, False)])
def test_deadband_of_a_percent_of_design_rule_is_checked_against_the_device_s_design(
    tmp_path: Path, design: int, refused_: bool
) -> None:
    # fw.axial_force at 100 % of design, deadband 160: held while the force is above -60 % of design. A pole's
    # force reads -50 kN at least (the catalog): with a design of 100 kN that is -50 %, so it never clears; with
    # 30 kN it is -167 %, and -60 % can be read. Before: accepted whatever the design (only value, mean and abs
    # rules were checked)
    text = override(
        "rule: fw.axial_force, devices: [FW-1], deadband: 160", dev("FW-1", f"design_values: {{axial_force: {design}}}")
    )
    p = tmp_path / "site.yaml"
    p.write_text(text, encoding="utf-8")
    if refused_:
        msg = refused(tmp_path, text)
        assert "rules.overrides[0].deadband" in msg and "FW-1" in msg and "never clear" in msg, msg
    else:
        load_config(p)


def test_measure_override_error_names_measure(tmp_path: Path) -> None:
    # before: "rule gas.co_twa: window_s applies to ... window_mean rules only" although the file sets no window_s
    msg = refused(tmp_path, override("rule: gas.co_twa, measure: value"))
    assert "rules.overrides[0].measure" in msg, msg


def test_a_mean_made_by_an_override_can_be_set_back_for_a_device(tmp_path: Path) -> None:
    # every crane compares a 10 min mean of the wind, TC-01 each sample: the mean's window goes with the mean
    p = tmp_path / "site.yaml"
    text = override("rule: tc.wind, measure: window_mean, window_s: 600")
    p.write_text(text + f"    - {{rule: tc.wind, devices: [TC-01], measure: value, {S}}}\n", encoding="utf-8")
    cfg = load_config(p)
    wind = next(
        r for r in resolve_rules(default_rules(), cfg.rules, cfg.device_contexts())["TC-01"] if r.id == "tc.wind"
    )
    assert (wind.measure, wind.window_s) == ("value", None)


# ---- 9. escalation matches that can never match --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "path"),
    [
        (
            "{id: p, match: {kinds: [crane]}, tiers: [{roles: [safety_officer], channels: [siren]}]}",
            "escalation.policies[0].match.kinds",
        ),  # tower_crane is meant: the policy never applies
        (
            "{id: p, match: {kinds: []}, tiers: [{roles: [safety_officer], channels: [siren]}]}",
            "escalation.policies[0].match.kinds",
        ),
        (
            "{id: p, match: {rules: [gas.lell]}, tiers: [{roles: [safety_officer], channels: [siren]}]}",
            "escalation.policies[0].match.rules",
        ),
        # repeats defaults to 0: no repeat is ever sent (the reverse, repeats without repeat_every_s, is refused)
        (
            "{id: p, tiers: [{roles: [safety_officer], channels: [siren], repeat_every_s: 600}]}",
            "escalation.policies[0].tiers[0]",
        ),
    ],
)
def test_escalation_policy_that_cannot_apply_is_refused(tmp_path: Path, policy: str, path: str) -> None:
    assert path in refused(tmp_path, BASE + ESCALATION + f"  policies: [{policy}]\n")


# ---- 10. site-wide settings ------------------------------------------------------------------------------------------


def test_profile_dir_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    # before: ignored; a site profile that replaces a built-in one is silently not loaded
    assert "profile_dirs" in refused(tmp_path, BASE + "profile_dirs: [site-profiles]\n")


@pytest.mark.parametrize("zone", ["localtime", "posixrules", "right/Asia/Shanghai"])
def test_site_timezone_is_an_iana_zone(tmp_path: Path, zone: str) -> None:
    # localtime: whatever the box is set to; right/: counts leap seconds (27 s off); not IANA zone names
    text = BASE.replace("name: 测试工地}", f"name: 测试工地, timezone: {zone}}}")
    assert "site.timezone" in refused(tmp_path, text)


@pytest.mark.parametrize("zone", ["localtime", "right/Asia/Shanghai", "posix/Asia/Shanghai", "'+08:60'", "'+15:00'"])
def test_device_time_zone_is_checked_as_the_site_s(tmp_path: Path, zone: str) -> None:
    # before: a device's own zone (`timestamp.zone`) took any file of the zone folder (localtime: the box's
    # setting; right/: 27 s off) and any offset (+08:60 read as +09:00), where the site's zone is refused
    msg = refused(tmp_path, dev("GAS-1", f"timestamp: {{format: iso8601, zone: {zone}}}"))
    assert "devices[2]" in msg and "timestamp" in msg, msg
    assert "IANA" in msg or "offset runs from" in msg, msg


def test_device_time_error_says_what_is_wrong(tmp_path: Path) -> None:
    # before: the message was the last line of pydantic's text, its link to its docs ("For further information
    # visit https://errors.pydantic.dev/..."), whatever the device's `timestamp` got wrong
    msg = refused(tmp_path, dev("GAS-1", "timestamp: {format: pattern}"))
    assert "devices[2].timestamp" in msg and "needs 'pattern'" in msg, msg
    assert "errors.pydantic.dev" not in msg, msg


def test_device_time_zone_accepts_names_and_offsets(tmp_path: Path) -> None:
    for zone in ("Asia/Urumqi", "'+08:00'", "'-03:30'", "UTC", "site"):
        p = tmp_path / "site.yaml"
        p.write_text(dev("GAS-1", f"timestamp: {{format: iso8601, zone: {zone}}}"), encoding="utf-8")
        load_config(p)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (BASE + "hazards: {timezone: UTC}\n", "hazards.timezone (line 13)"),
        (
            BASE
            + "second_sink: {sink: {type: influxdb_v1, url: 'http://h:1', database: x}, spool: {dir: var/spool}}\n",
            "second_sink.spool.dir (line 13)",
        ),
    ],
)
def test_cross_check_without_an_index_names_its_line(tmp_path: Path, text: str, where: str) -> None:
    # before: "(top level) (line 1): hazards.timezone: ..." (the loader's _CROSS pattern needs an `[index]`)
    msg = refused(tmp_path, text)
    assert where in msg, msg


def test_two_brokers_with_one_client_id_on_one_endpoint_are_refused(tmp_path: Path) -> None:
    # the broker ends one session whenever the other connects (MQTT 3.1.1 §3.1.4): the two take each other over
    text = BASE.replace(
        "  - {id: b1, host: 127.0.0.1}\n",
        "  - {id: b1, host: 127.0.0.1, client_id: gw}\n  - {id: b2, host: 127.0.0.1, client_id: gw}\n",
    )
    assert "brokers[1].client_id" in refused(tmp_path, text)


# ---- survey_day_starts: the day a survey point's run of days counts, on no other device ----------------------------

SURVEYED = BASE.replace("sink:", "  - {id: SV-1, profile: excavation_survey_v1, expected_interval_s: 86400}\nsink:")


def test_a_survey_day_start_reaches_the_point_s_run_of_days(tmp_path: Path) -> None:
    p = tmp_path / "site.yaml"
    for written in ("12:00", '"12:00"', "'06:30'", '"6:30"'):  # (H:MM as the survey import reads it)
        p.write_text(dev("SV-1", f"survey_day_starts: {written}", SURVEYED), encoding="utf-8")
        got = load_config(p).device_contexts()
        assert got["SV-1"].survey_day_starts == (time(6, 30) if "6:30" in written else time(12)), written
    assert got["PIT-1"].survey_day_starts == time(0)  # none given: calendar days, as before


@pytest.mark.parametrize(
    ("text", "path", "why"),
    [
        # seconds after midnight (00:00:12): never what was meant
        (dev("SV-1", "survey_day_starts: 12", SURVEYED), "devices[5].survey_day_starts", "12 is a number: write"),
        (dev("SV-1", 'survey_day_starts: "12:00+08:00"', SURVEYED), "devices[5].survey_day_starts", "site's zone"),
        # seconds were accepted and dropped (an outside review); a boolean was "True is a number"
        (dev("SV-1", 'survey_day_starts: "12:00:30"', SURVEYED), "devices[5].survey_day_starts", '"HH:MM"'),
        (dev("SV-1", "survey_day_starts: yes", SURVEYED), "devices[5].survey_day_starts", "YAML boolean"),
        (dev("SV-1", 'survey_day_starts: "24:00"', SURVEYED), "devices[5].survey_day_starts", "no time of day"),
        # a gauge's day is judged once it is over: its days stay calendar days
        (dev("PIT-1", "survey_day_starts: 12:00", SURVEYED), "devices[3].survey_day_starts", "every 2 s"),
        # surveyed daily, but no rule of a formwork device counts days
        (
            dev(
                "FW-1",
                "survey_day_starts: 12:00",
                SURVEYED.replace("expected_interval_s: 5}", "expected_interval_s: 86400}", 1),
            ),
            "devices[1].survey_day_starts",
            "no rule of this device counts a run of days",
        ),
    ],
)
def test_a_survey_day_start_that_would_do_nothing_or_something_else_is_refused(
    tmp_path: Path, text: str, path: str, why: str
) -> None:
    err = refused(tmp_path, text)
    assert path in err and why in err, err


# ---- an outside review of the eighteenth session's checks ---------------------------------------------------------


def test_site_wide_pod_deadband_that_a_device_override_corrects_is_accepted(tmp_path: Path) -> None:
    # a site-wide deadband suited to the 30 kN poles, and the 100 kN pole given its own: FW-1 ends with deadband 10
    # (held down to 90 %, clears). Refused: the site-wide entry is checked on FW-1 before FW-1's own entry applies
    text = dev("FW-1", "design_values: {axial_force: 100}") + (
        "rules:\n  overrides:\n"
        f"    - {{rule: fw.axial_force, deadband: 160, {S}}}\n"
        f"    - {{rule: fw.axial_force, devices: [FW-1], deadband: 10, {S}}}\n"
    )
    p = tmp_path / "site.yaml"
    p.write_text(text, encoding="utf-8")
    cfg = load_config(p)  # ConfigError: rules.overrides[0].deadband: ... on FW-1 (design value 100) ... never clear
    (rule,) = [r for r in resolve_rules(default_rules(), cfg.rules, cfg.device_contexts())["FW-1"]
               if r.id == "fw.axial_force"]  # fmt: skip
    assert rule.deadband == 10


def test_check_config_says_a_pack_gate_the_device_cannot_open(tmp_path: Path) -> None:
    # yunzhu_tower_crane_json_v1 reports load_moment_ratio (tc.limiter_bypass binds) but not hoisting_up, the rule's
    # pack gate: the limiter-bypass alarm (危险, latched) can never be raised on that crane, and nothing says so
    text = BASE.replace(
        "sink:",
        "  - {id: TC-YZ, profile: yunzhu_tower_crane_json_v1, broker: b1, topic: yz/+, expected_interval_s: 5}\nsink:",
    )
    p = tmp_path / "site.yaml"
    p.write_text(text, encoding="utf-8")
    cfg = load_config(p)
    ctx = cfg.device_contexts()
    rules = {r.id: r for r in resolve_rules(default_rules(), cfg.rules, ctx)["TC-YZ"]}
    assert "tc.limiter_bypass" in rules and ctx["TC-YZ"].gates is not None
    assert "hoisting_up" not in ctx["TC-YZ"].gates  # the gate can never open
    out = check_config(cfg, p)
    # it prints "TC-01, TC-YZ: 危险 > 110 %  / only while hoisting_up == 1": in force on TC-YZ, as on TC-01
    said = [ln for ln in out.splitlines() if "TC-YZ" in ln and "hoisting_up" in ln]
    assert said, "check-config lists tc.limiter_bypass as in force on TC-YZ and never says its gate cannot open"


def test_gate_on_a_family_name_of_a_plain_quantity_names_no_empty_depth_list(tmp_path: Path) -> None:
    # `load_d5m` (a typo, or a copy from an inclinometer entry) is refused, rightly, but the message says the crane
    # "reports load at its depths only ()": load has no depths, and the empty list reads as a bug
    msg = refused(
        tmp_path, override("rule: tc.wind, devices: [TC-01], when: [{quantity: load_d5m, op: '<=', value: 1}]")
    )
    assert "depths only ()" not in msg, msg


def test_depth_list_with_an_auxiliary_quantity_of_the_family_prefix(tmp_path: Path) -> None:
    # an inclinometer model that also reports an auxiliary `deep_displacement_drift` (allowed: not a catalog name nor
    # a depth name): the depth list is sorted by float(name after '_d'), and 'rift' is no number. The site file is
    # refused with "could not convert string to float: 'rift'" in place of the gate message
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "inc_drift_v1.yaml").write_text(
        "id: inc_drift_v1\nkind: excavation\ntitle: probe\ntransport: modbus\naddress_base: pdu\n"
        "auxiliary: [{name: deep_displacement_drift, unit: mm}]\npoints:\n"
        "  - {quantity: deep_displacement_d2m, table: holding, address: 100, type: int16, unit: mm}\n"
        "  - {quantity: deep_displacement_drift, table: holding, address: 101, type: int16, unit: mm}\n",
        encoding="utf-8",
    )
    text = "profile_dirs: [profiles]\n" + BASE.replace(
        "sink:", "  - {id: INC-9, profile: inc_drift_v1, line: l1, unit_id: 9, poll_interval_s: 60}\nsink:"
    )
    body = (
        "rule: exc.deep_displacement_rate, devices: [INC-9], when: [{quantity: deep_displacement, op: '<=', value: 5}]"
    )
    msg = refused(tmp_path, override(body, text))
    assert "could not convert" not in msg and "deep_displacement_d2m" in msg, msg


def test_hazards_timezone_naming_a_folder_is_a_config_error(tmp_path: Path) -> None:
    # site.timezone: 'Asia' is "unknown IANA time zone"; hazards.timezone: 'Asia' escapes as IsADirectoryError
    # (alerting/hazards/model.py catches ZoneInfoNotFoundError and ValueError, not OSError): a traceback
    p = tmp_path / "site.yaml"
    p.write_text(BASE + "hazards: {timezone: Asia}\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        load_config(p)


@pytest.mark.parametrize("gate", ["clock_skew", "decode_errors", "inspection_danger"])
def test_gate_on_a_health_state_sent_only_when_it_changes_is_refused(tmp_path: Path, gate: str) -> None:
    # before: accepted, and the gate never opened on a healthy device (clock_skew and decode_errors are sent when
    # they change only, inspection_danger with an inspection's finding): gas.lel was never judged, a 60 %LEL
    # reading raised nothing (found by an outside review)
    msg = refused(
        tmp_path, override(f"rule: gas.lel, devices: [GAS-1], when: [{{quantity: {gate}, op: '==', value: 0}}]")
    )
    assert "rules.overrides[0].when[0]" in msg and "when it changes only" in msg, msg


def test_an_unquoted_offset_is_refused_saying_to_quote_it(tmp_path: Path) -> None:
    # `zone: +0700` is the YAML number 700: "Input should be a valid string" said nothing of why
    msg = refused(tmp_path, dev("GAS-1", "timestamp: {format: iso8601, zone: +0700}"))
    assert "devices[2].timestamp.zone" in msg and "in quotes" in msg, msg
