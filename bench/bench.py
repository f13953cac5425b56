#!/usr/bin/env python3
"""Benchmark: pagewho --summary against drgn's per-page helpers and crash's kmem -p.

    .venv/bin/python bench/bench.py [--suite bookworm-4g|bookworm|...] [--repeat N]
    .venv/bin/python bench/bench.py --vmcore VMCORE --vmlinux VMLINUX

On one dump, in one run, each contender runs twice in a fresh process: over
every page, and over one pfn.  The difference of the two wall times is the
*marginal* cost of the pages, so interpreter start-up, opening the dump and
loading debug info cancel out:

  (a) pagewho --summary through the core (pagewho.survey.Summary: classify
      every pfn, name owners aggregated, render the text);
  (b) a drgn loop over ``for_each_page()`` calling drgn's own per-page
      helpers (decode_page_flags, PageSlab, PageLRU, PageHead, PageTail,
      PageReserved, PageSwapBacked) -- what a drgn script would write;
  (c) crash ``kmem -p`` over all pages (output to /dev/null), with the
      crash build that reads the kernel (the host's, else the forky chroot's,
      tests/crashtool.py); one session with ``kmem -p PHYS`` against one
      with it plus --crash-passes full passes, the difference divided by the
      passes (crash's start-up varies by about a CPU second run to run).

Times are CPU seconds of the process doing the work (the lab machine runs
QEMU guests next to it; wall times are printed in brackets).

Prints pages/s of each and the ratios a/b and a/c (how many times faster
pagewho is per page).  This is not a test: numbers depend on the machine
and its load; bench/README.md records measured runs.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

ONE_PFN = 0x1000  # a valid, ordinary pfn for the one-pfn runs


def _worker(which: str, vmcore: str, vmlinux: str, scope: str) -> None:
    """Run one contender in this process (called through a subprocess)."""
    t0 = time.monotonic()
    c0 = time.process_time()
    if which == "pagewho":
        from pagewho.drgn_target import DrgnTarget
        from pagewho.kernel import kernel_of
        from pagewho.memmap import memmap_of
        from pagewho.survey import Summary, summary_text

        k = kernel_of(DrgnTarget.open(vmcore, vmlinux))
        memmap_of(k)
        t1 = time.monotonic()
        c1 = time.process_time()
        s = Summary(k)
        if scope == "all":
            s.collect()
        else:
            s.collect(start=ONE_PFN, end=ONE_PFN + 1)
        text = "\n".join(summary_text(s.to_dict()))
        n = s.pages
        assert text
    elif which == "drgn":
        import drgn
        from drgn.helpers.linux.mm import (
            PageHead,
            PageLRU,
            PageReserved,
            PageSlab,
            PageSwapBacked,
            PageTail,
            decode_page_flags,
            for_each_page,
            pfn_to_page,
        )

        from pagewho.drgn_target import DrgnTarget

        prog = DrgnTarget.open(vmcore, vmlinux).prog
        t1 = time.monotonic()
        c1 = time.process_time()
        pages = for_each_page(prog) if scope == "all" else [pfn_to_page(prog, ONE_PFN)]
        n = 0
        for page in pages:
            try:
                decode_page_flags(page)
                PageSlab(page)
                PageLRU(page)
                PageHead(page)
                PageTail(page)
                PageReserved(page)
                PageSwapBacked(page)
                n += 1
            except drgn.FaultError:
                pass
    else:
        raise SystemExit("unknown worker %r" % which)
    print("pages=%d setup=%.3f loop=%.3f loop_cpu=%.3f setup_cpu=%.3f" % (
        n, t1 - t0, time.monotonic() - t1, time.process_time() - c1, c1 - c0), flush=True)


def _field(out: str, name: str) -> float:
    for tok in out.split():
        if tok.startswith(name + "="):
            return float(tok[len(name) + 1:])
    raise RuntimeError("no %s in %r" % (name, out))


def _py(which, vmcore, vmlinux, scope, repeat):
    """(wall, cpu, pages) of the contender's loop (after opening the dump),
    best of ``repeat`` fresh processes."""
    best = None
    for _ in range(repeat):
        r = subprocess.run([sys.executable, __file__, "--worker", which, vmcore, vmlinux, scope],
                           capture_output=True, text=True, timeout=7200)
        if r.returncode != 0:
            raise RuntimeError("%s worker failed: %s" % (which, (r.stderr or r.stdout)[-800:]))
        got = (_field(r.stdout, "loop"), _field(r.stdout, "loop_cpu"), int(_field(r.stdout, "pages")))
        best = got if best is None or got[1] < best[1] else best
    return best


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _crash(vmcore, vmlinux, repeat, passes):
    """(build, version, {"one": (wall, cpu), "all": (wall, cpu)}): one crash
    session with ``kmem -p PHYS`` only, and one with it plus ``passes`` full
    ``kmem -p`` runs (to /dev/null); best of ``repeat`` sessions each."""
    import crashtool

    phys = ONE_PFN << 12
    one_cmd = "kmem -p %x > /dev/null" % phys
    for build in ("host", "forky"):
        if crashtool.available(build):
            continue
        try:
            crashtool.run(build, vmlinux, vmcore, [one_cmd], timeout=600)
        except crashtool.CrashUnavailable:
            continue
        times = {}
        for scope, cmds in (("one", [one_cmd]), ("all", [one_cmd] + ["kmem -p > /dev/null"] * passes)):
            best = None
            for _ in range(repeat):
                t, c = time.monotonic(), _children_cpu()
                crashtool.run(build, vmlinux, vmcore, cmds, timeout=7200)
                got = (time.monotonic() - t, _children_cpu() - c)
                best = got if best is None or got[1] < best[1] else best
            times[scope] = best
        return build, crashtool.crash_version(build), times
    return None, None, None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", nargs=4, metavar=("WHICH", "VMCORE", "VMLINUX", "SCOPE"), help=argparse.SUPPRESS)
    p.add_argument("--suite", default=None, help="lab sample (default: bookworm-4g if built, else bookworm)")
    p.add_argument("--vmcore")
    p.add_argument("--vmlinux")
    p.add_argument("--repeat", type=int, default=3, help="runs of each, best kept (default 3)")
    p.add_argument("--crash-passes", type=int, default=10,
                   help="full kmem -p passes in crash's timed session (default 10)")
    p.add_argument("--skip", action="append", default=[], choices=["drgn", "crash"])
    a = p.parse_args(argv)
    if a.worker:
        _worker(*a.worker)
        return 0
    if a.vmcore:
        vmcore, vmlinux, what = a.vmcore, a.vmlinux, a.vmcore
    else:
        sys.path.insert(0, str(REPO / "vmcores-sample"))
        import lab

        suite = a.suite
        if suite is None:
            suite = "bookworm"
            try:
                _, kdir = lab.kernel("bookworm")
                if lab._sample_complete(lab._sample_dir(kdir, lab.VARIANTS["bookworm-4g"][1])):
                    suite = "bookworm-4g"
            except Exception:
                pass
        s = lab.sample(suite)
        vmcore, vmlinux = str(s.vmcore_elf), str(s.vmlinux)
        what = "lab sample %s (%s, %d MiB guest)" % (suite, s.release, s.truth.get("mem_mb", 0))
    print("dump: %s" % what)
    print("machine: %d cpus, load average %s" % (os.cpu_count() or 0,
                                                 " ".join("%.1f" % x for x in os.getloadavg())))
    print("marginal cost = (all pages) - (one pfn), CPU seconds (wall in brackets)")
    rates = {}
    w1, c1, _ = _py("pagewho", vmcore, vmlinux, "one", a.repeat)
    w, c, pages = _py("pagewho", vmcore, vmlinux, "all", a.repeat)
    rates["a"] = pages / max(c - c1, 1e-9)
    print("(a) pagewho --summary:    %8.2f s [%.2f] for %d pages -> %9.0f pages/s" % (
        c - c1, w - w1, pages, rates["a"]))
    if "drgn" not in a.skip:
        w1, c1, _ = _py("drgn", vmcore, vmlinux, "one", a.repeat)
        w, c, dpages = _py("drgn", vmcore, vmlinux, "all", 1)
        rates["b"] = dpages / max(c - c1, 1e-9)
        print("(b) drgn helper loop:     %8.2f s [%.2f] for %d pages -> %9.0f pages/s" % (
            c - c1, w - w1, dpages, rates["b"]))
    if "crash" not in a.skip:
        build, version, times = _crash(vmcore, vmlinux, a.repeat, a.crash_passes)
        if times:
            n = a.crash_passes
            dc = (times["all"][1] - times["one"][1]) / n
            dw = (times["all"][0] - times["one"][0]) / n
            rates["c"] = pages / max(dc, 1e-9)
            print("(c) crash kmem -p:        %8.2f s [%.2f] per pass (%d passes, %s) -> %9.0f pages/s" % (
                dc, dw, n, version, rates["c"]))
        else:
            print("(c) crash kmem -p: no crash build reads this dump")
    for key, label in (("b", "drgn's helper loop"), ("c", "crash's kmem -p")):
        if key in rates:
            print("a/%s = %.1f: pagewho --summary is %.1fx as fast per page as %s" % (
                key, rates["a"] / rates[key], rates["a"] / rates[key], label))
    return 0


if __name__ == "__main__":
    sys.exit(main())
