"""Every profile carries golden samples (Telegraf-style test cases) that must decode to their expectations; the
third-party corpus cites its sources; `sitegw test-profile` and `check-config` use the same samples."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from drivers.profile import PROFILE_DIR, builtin_profiles
from drivers.testbench import check_samples, load_samples, profile_samples
from gateway.cli import main

PROFILES = builtin_profiles()


@pytest.mark.parametrize("pid", sorted(PROFILES))
def test_every_profile_decodes_its_golden_samples(pid: str) -> None:
    path = profile_samples(pid, [])
    assert path is not None, f"{pid}: add drivers/profiles/samples/{pid}.yaml"
    sf = load_samples(path)
    assert check_samples(PROFILES[pid], sf) == []
    assert any(c.expect for c in sf.cases)


def test_the_third_party_corpus() -> None:
    corpus = {pid: p for pid, p in PROFILES.items() if p.sources}
    assert len(corpus) >= 8
    families = {p.kind.value for p in corpus.values()}
    assert {"tower_crane", "construction_elevator", "gas", "environment", "excavation"} <= families
    for pid in corpus:
        header = (PROFILE_DIR / f"{pid}.yaml").read_text(encoding="utf-8").split("\nid:")[0]
        assert header.startswith("#") and len(header) > 100, f"{pid}: cite the source in the header"


def test_a_sample_that_no_longer_matches_is_reported_case_by_case() -> None:
    sf = load_samples(profile_samples("taidacent_noise_modbus_v1", []))  # type: ignore[arg-type]
    case = sf.cases[0].model_copy(update={"expect": [sf.cases[0].expect[0].model_copy(update={"value": 57.1})]})
    bad = sf.model_copy(update={"cases": [case]})
    assert check_samples(PROFILES["taidacent_noise_modbus_v1"], bad) == [
        "case '57.0 dB': noise: expected 57.1, got 57.0"
    ]


def test_test_profile_prints_readings_with_units_quality_and_both_times(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.jsonl").write_text(
        '{"sn": "SN1", "time": "2026-11-21T09:30:00+08:00", "readings": [{"gas": "EX", "value": 3, "unit": "%LEL"}]}\n'
        '{"sn": "SN1", "time": "2026-11-21T09:30:01+08:00", "readings": [{"gas": "EX", "value": "x"}]}\n',
        encoding="utf-8",
    )
    assert main(["test-profile", "gas_4in1_mqtt_v1", "--payload", str(tmp_path / "p.jsonl")]) == 1
    out = capsys.readouterr().out
    assert "lel" in out and "%LEL" in out and "good" in out
    assert "2026-11-21T01:30:00.000Z  (2026-11-21 09:30:00.000 Asia/Shanghai)" in out
    assert "ERROR readings[0].value (lel): expected a number" in out  # the error names its JSON path
    (tmp_path / "r.txt").write_text("30001: 0000 4148\n", encoding="utf-8")  # half of the one block read
    assert main(["test-profile", "excavation_displacement_rtu_v1", "--registers", str(tmp_path / "r.txt")]) == 1
    out = capsys.readouterr().out
    assert "ERROR input 2 (PDU) is not in the dump: horizontal_displacement, vertical_displacement not decoded" in out
    (tmp_path / "r.txt").write_text("30001: 0000 4148 0000 C070  # CDAB floats\n", encoding="utf-8")
    assert main(["test-profile", "excavation_displacement_rtu_v1", "--registers", str(tmp_path / "r.txt")]) == 0
    out = capsys.readouterr().out
    assert "horizontal_displacement" in out and "12.5 mm" in out and "-3.75 mm" in out
    assert main(["test-profile", "hj212_dust_noise_v1"]) == 0
    assert "OK: every sample decodes as expected" in capsys.readouterr().out


def test_check_config_refuses_a_profile_whose_samples_drifted_and_lists_unmapped_bits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prof_dir = tmp_path / "profiles"
    (prof_dir / "samples").mkdir(parents=True)
    doc = yaml.safe_load((PROFILE_DIR / "tower_crane_tcp_v1.yaml").read_text(encoding="utf-8"))
    doc["id"] = "my_crane"
    (prof_dir / "my_crane.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    samples = yaml.safe_load((PROFILE_DIR / "samples" / "tower_crane_tcp_v1.yaml").read_text(encoding="utf-8"))
    samples["profile"] = "my_crane"
    (prof_dir / "samples" / "my_crane.yaml").write_text(yaml.safe_dump(samples, allow_unicode=True), "utf-8")
    site = {
        "site": {"id": "s", "name": "s"},
        "profile_dirs": ["profiles"],
        "lines": [{"id": "l", "type": "modbus_tcp", "host": "127.0.0.1", "port": 1502}],
        "devices": [{"id": "TC", "profile": "my_crane", "line": "l", "unit_id": 1}],
        "sink": {"type": "influxdb_v1", "url": "http://127.0.0.1:8086", "database": "x"},
    }
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(site), encoding="utf-8")
    assert main(["check-config", str(tmp_path / "site.yaml")]) == 0
    out = capsys.readouterr().out
    assert "NOTE holding 14: bits 5–15 are not mapped and the word is not stored" in out
    # someone edits the register map: the load moves, the samples no longer agree
    doc["points"][0]["address"] = 20
    (prof_dir / "my_crane.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    shutil.rmtree(tmp_path / "spool", ignore_errors=True)
    from gateway.config import _profiles

    _profiles.cache_clear()
    assert main(["check-config", str(tmp_path / "site.yaml")]) == 2
    err = capsys.readouterr().err
    assert "profile samples no longer decode as expected" in err
    assert "profile my_crane" in err and "case 'lifting, load and height limiters tripped" in err


def test_test_profile_says_when_a_payload_holds_none_of_the_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the gateway dead-letters such a message (drivers/mqtt/session.py): the test bench printed its label and
    # nothing under it, and exited 0, as if the payload had decoded
    (tmp_path / "p.json").write_text(
        '{"sn": "SN1", "time": "2026-11-21T09:30:00+08:00", "readings": []}', encoding="utf-8"
    )
    assert main(["test-profile", "gas_4in1_mqtt_v1", "--payload", str(tmp_path / "p.json")]) == 1
    out = capsys.readouterr().out
    assert "ERROR device SN1: the payload holds none of the fields profile gas_4in1_mqtt_v1 maps" in out
