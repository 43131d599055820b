"""A two-minute soak with the compressed fault script (broker restart, InfluxDB killed, gateway `kill -9`, device
flaps, malformed payloads, gas leaks): the account of readings, dead letters, alarms and notifications balances."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # about 3 minutes: `make test-slow`
def test_soak_short_balances(tmp_path: Path) -> None:
    # its own services, simulators and gateway, in a subprocess: the soak kills and restarts them at will
    run = tmp_path / "soak"
    proc = subprocess.run(
        [sys.executable, "-m", "soak", "--minutes", "2", "--workdir", str(run)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,  # a guard against a hang, not a timing assertion: a loaded machine may take far longer
    )
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"the soak's account does not balance:\n{report[-6000:]}"
    account = (run / "account.txt").read_text(encoding="utf-8")
    assert "FAIL" not in account
    for line in ("readings: produced", "dead letters:", "alarms gas.lel@GAS-01", "siren:", "gateway life 1"):
        assert line in account, account
