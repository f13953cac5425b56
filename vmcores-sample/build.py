#!/usr/bin/env python3
"""Build (or find in the cache) sample vmcores: build.py [SUITE ...|all] [--rebuild].

Prints one line per sample: suite, kernel release, directory.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("suites", nargs="*", default=["all"],
                    help=f"{', '.join(lab.SUITES + tuple(lab.VARIANTS))} or all (default)")
    ap.add_argument("--rebuild", action="store_true", help="re-dump even when cached")
    args = ap.parse_args(argv)
    suites = []
    for s in args.suites:
        suites += list(lab.SUITES) if s == "all" else [s]
    failed = 0
    for suite in suites:
        t = time.monotonic()
        try:
            s = lab.sample(suite, rebuild=args.rebuild)
        except Exception as e:  # report every suite, fail at the end
            print(f"{suite}\tFAILED\t{e}", flush=True)
            failed += 1
            continue
        print(f"{suite}\t{s.release}\t{s.dir}\t({time.monotonic() - t:.1f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
