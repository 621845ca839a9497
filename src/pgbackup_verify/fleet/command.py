"""pgbackup-verify fleet: one HTML page of many hosts' JSON reports, worst first."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pgbackup_verify.errors import CONFIG_ERROR, OK
from pgbackup_verify.fleet import page, reports


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pgbackup-verify fleet", description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, metavar="REPORTS",
                        help="a host's reports directory (its latest.json), a JSON report, or a directory of "
                             "hosts (each */latest.json, or its *.json files)")
    parser.add_argument("-o", "--output", type=Path, default=Path("fleet.html"), help="the page (default fleet.html)")
    parser.add_argument("--stale-hours", type=float, default=26.0,
                        help="an OK report older than this is STALE (default 26: a nightly run plus 2 h grace)")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.reports if not p.exists()]
    if missing:
        print(f"pgbackup-verify fleet: {', '.join(missing)} does not exist; name reports directories or JSON "
              "reports", file=sys.stderr)
        return CONFIG_ERROR
    rows = reports.fleet(args.reports, args.stale_hours)
    if not rows:
        print(f"pgbackup-verify fleet: no JSON report under {', '.join(map(str, args.reports))}; name each host's "
              "reports directory (latest.json) or copy the reports there", file=sys.stderr)
        return CONFIG_ERROR
    out = args.output.absolute()
    try:
        page.write(rows, out)
    except OSError as e:
        print(f"pgbackup-verify fleet: '{out}' cannot be written ({e.strerror}); pick another -o", file=sys.stderr)
        return CONFIG_ERROR
    bad = sum(r.status != "OK" for r in rows)
    print(f"pgbackup-verify fleet: {len(rows)} hosts, {bad} not OK: {out}")
    return OK
