"""`python -m soak [--minutes N]`: run the soak with faults and print the account; exit 0 only if it balances."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from soak import account
from soak.run import Soak, say
from soak.site import ROOT


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m soak", description="SiteGW soak with faults and an exact account.")
    p.add_argument("--minutes", type=float, default=30.0, help="how long the fault script runs (default 30)")
    p.add_argument("--workdir", type=Path, default=ROOT / ".run" / "soak", help="wiped at start (default .run/soak)")
    args = p.parse_args(argv)
    soak = Soak(args.workdir, args.minutes)
    try:
        soak.execute()
        acc = account.build(soak)
    finally:
        soak.close()
    account.dump(acc, args.workdir / "account.txt")
    print(f"\n==== SiteGW soak: {args.minutes:g} min; {soak.script.summary()} ====")
    print(acc.render())
    say(f"account {'BALANCES' if acc.balanced else 'DOES NOT BALANCE'} (logs and account.txt in {args.workdir})")
    return 0 if acc.balanced else 1


if __name__ == "__main__":
    sys.exit(main())
