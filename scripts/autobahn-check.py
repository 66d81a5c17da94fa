#!/usr/bin/env python3
"""Check a kosoku (Autobahn TestSuite) report directory.

Reads REPORT_DIR/index.json ({agent: {case: {behavior, behaviorClose, ...}}}), prints one
summary line, lists every failing case, and exits 1 when a case failed: a behavior other
than OK, NON-STRICT, INFORMATIONAL or UNIMPLEMENTED (so FAILED, and ERROR for a case that
could not run), or a close behavior other than OK or INFORMATIONAL (FAILED, WRONG CODE,
UNCLEAN, FAILED BY CLIENT). With --require-implemented, UNIMPLEMENTED counts as a failure
too (a run with compression enabled must implement every case). Exit 2: no report.
Cases listed in the expected file ({"case id": "reason"}) are accepted with their reason;
a listed case that now passes is reported so the list can shrink.
"""

import argparse
import json
import pathlib
import sys
from collections import Counter

# What passes; anything else fails, so a verdict kosoku adds later cannot slip through.
GOOD_BEHAVIOR = {"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"}
GOOD_CLOSE = {"OK", "INFORMATIONAL"}


def case_key(case_id):
    return tuple(int(p) if p.isdigit() else p for p in case_id.split("."))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("report_dir")
    parser.add_argument("--name", default=None)
    parser.add_argument("--expected", default=None)
    parser.add_argument("--require-implemented", action="store_true")
    parser.add_argument("--min-cases", type=int, default=517)
    args = parser.parse_args()

    report_dir = pathlib.Path(args.report_dir)
    name = args.name or report_dir.name
    index_path = report_dir / "index.json"
    if not index_path.exists():
        print(f"autobahn {name}: no report at {index_path}")
        return 2
    index = json.loads(index_path.read_text())
    expected = {}
    if args.expected and pathlib.Path(args.expected).exists():
        expected = json.loads(pathlib.Path(args.expected).read_text())

    cases = {}
    for agent_cases in index.values():
        cases.update(agent_cases)

    counts = Counter()
    failures = []
    accepted = []
    fixed = []
    for case_id in sorted(cases, key=case_key):
        result = cases[case_id]
        behavior = result.get("behavior", "MISSING")
        close = result.get("behaviorClose", "MISSING")
        counts[behavior] += 1
        bad = behavior not in GOOD_BEHAVIOR or close not in GOOD_CLOSE
        if args.require_implemented and behavior == "UNIMPLEMENTED":
            bad = True
        if bad and case_id in expected:
            accepted.append((case_id, behavior, close, expected[case_id]))
        elif bad:
            failures.append((case_id, behavior, close))
        elif case_id in expected:
            fixed.append(case_id)

    total = len(cases)
    detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"autobahn {name}: {total} cases, {len(failures)} failed ({detail})")
    for case_id, behavior, close, reason in accepted:
        print(f"  accepted {case_id}: behavior={behavior} close={close} ({reason})")
    for case_id in fixed:
        print(f"  fixed {case_id}: passes now, remove it from the expected list")
    for case_id, behavior, close in failures:
        print(f"  FAILED {case_id}: behavior={behavior} close={close}")
    if total < args.min_cases:
        print(f"  only {total} cases ran, expected at least {args.min_cases}")
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
