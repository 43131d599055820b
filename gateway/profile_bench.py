"""`sitegw test-profile`: what a profile makes of a device's payloads or registers, and its golden samples."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from drivers.profile import AnyProfile, ModbusProfile, MqttProfile, ProfileError, builtin_profiles, load_profile_file
from drivers.testbench import (
    check_samples,
    decode_payloads,
    decode_registers,
    describe,
    load_samples,
    profile_samples,
    run_case,
    split_payloads,
)
from drivers.timefmt import parse_zone


def _profile(name: str, dirs: list[Path]) -> tuple[AnyProfile, list[Path]]:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return load_profile_file(path), [path.parent, *dirs]
    for folder in dirs:
        for f in sorted(folder.glob("*.yaml")):
            p = load_profile_file(f)
            if p.id == name:
                return p, dirs
    found = builtin_profiles().get(name)
    if found is None:
        known = ", ".join(sorted(builtin_profiles()))
        raise ProfileError(f"no profile {name!r} (a file path, a profile in --profile-dir, or one of: {known})")
    return found, dirs


def run_test_profile(args: argparse.Namespace) -> int:
    """0: everything decoded (and every golden sample matched); 1: errors or mismatches; 2: unusable input."""
    try:
        parse_zone(args.timezone, "UTC")
        prof, dirs = _profile(args.profile, list(args.profile_dir))
    except (ProfileError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    receive_ns = time.time_ns()
    if args.payload or args.registers:
        path = args.payload or args.registers
        try:
            raw = path.read_bytes()
        except OSError as err:
            print(f"error: {path}: {err.strerror}", file=sys.stderr)
            return 2
        if args.registers:
            if not isinstance(prof, ModbusProfile):
                print(f"error: {prof.id} is an MQTT profile: use --payload", file=sys.stderr)
                return 2
            results = [decode_registers(prof, raw.decode("utf-8", "replace"), args.timezone, receive_ns)]
        else:
            if not isinstance(prof, MqttProfile):
                print(f"error: {prof.id} is a Modbus profile: use --registers", file=sys.stderr)
                return 2
            results = decode_payloads(prof, split_payloads(raw), args.topic, args.timezone, receive_ns)
        print(f"profile {prof.id} ({prof.title})")
        for d in results:
            print("\n".join(describe(d, args.timezone)))
        return 1 if any(d.errors for d in results) else 0
    # no input given: run the profile's golden samples
    sp = profile_samples(prof.id, dirs)
    if sp is None:
        print(f"profile {prof.id}: no golden samples (samples/{prof.id}.yaml beside the profile)", file=sys.stderr)
        return 1
    try:
        sf = load_samples(sp)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"profile {prof.id} ({prof.title}): {len(sf.cases)} golden sample(s) from {sp}")
    for case in sf.cases:
        print("\n".join(describe(run_case(prof, case, sf), sf.timezone)))
    problems = check_samples(prof, sf)
    for p in problems:
        print(f"MISMATCH {p}")
    print("OK: every sample decodes as expected" if not problems else f"FAILED: {len(problems)} mismatch(es)")
    return 1 if problems else 0
