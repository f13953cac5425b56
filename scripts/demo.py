"""The demo behind scripts/demo: pagewho on the bookworm sample vmcore.

Builds (or reuses) the sample, picks pfns the guest's workload planted
(page cache, anonymous memory shared by two processes, a THP, hugetlb, KSM,
swap cache, a slab page) and runs the `pagewho` command line on them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOP / "vmcores-sample"))

import lab  # noqa: E402

WANTED = ("pagecache", "anon", "thp", "hugetlb", "ksm", "swapcache", "shmem")


def pick_pfns(sample) -> list:
    """One planted pfn per interesting kind, plus a slab page and a free page."""
    pfns = []
    seen = set()
    for rec in sample.truth["records"]:
        kind = rec.get("kind")
        if kind in WANTED and kind not in seen and rec.get("pfn") is not None:
            seen.add(kind)
            pfn = rec["pfn"] + (rec.get("nr_pages", 1) // 2 if kind == "thp" else 0)
            pfns.append((kind, pfn))
    kpf = sample.kpageflags()
    for name, bit in (("slab", 7), ("buddy", 10)):
        for pfn in range(len(kpf) // 4, len(kpf)):
            if kpf[pfn] >> bit & 1:
                pfns.append((name, pfn))
                break
    return pfns


def main() -> int:
    suite = sys.argv[1] if len(sys.argv) > 1 else "bookworm"
    sample = lab.sample(suite)
    exe = str(TOP / ".venv" / "bin" / "pagewho")
    base = [exe, "--vmcore", str(sample.vmcore_elf), "--vmlinux", str(sample.vmlinux)]
    env = dict(os.environ, DRGN_DISABLE_PLUGINS="*")
    print("# sample: %s kernel %s\n#   %s\n" % (suite, sample.release, sample.vmcore_elf))
    for kind, pfn in pick_pfns(sample):
        print("$ pagewho --vmcore vmcore.elf --vmlinux vmlinux %#x      # planted: %s" % (pfn, kind))
        sys.stdout.flush()
        subprocess.run(base + ["%#x" % pfn], env=env, check=False)
        print()
    print("$ pagewho --vmcore vmcore.elf --vmlinux vmlinux --summary")
    sys.stdout.flush()
    subprocess.run(base + ["--summary"], env=env, check=False)
    print("\nNext: `pagewho --help`; JSON with --json; inside gdb: docs/gdb.md; "
          "inside crash: docs/crash.md; the tests: scripts/test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
