"""Cross-check pagewho with Debian's real ``crash`` on the sample dumps.

For a sample of pfns per kernel (the workload's planted pfns, an even
spread, and slab pages), crash runs in batch mode (tests/crashtool.py) with

- ``kmem -p PHYSADDR``: crash's own view of the struct page: its PAGE
  address, the raw ``flags`` word and the flag names crash decodes from the
  kernel's ``pageflag_names`` (memory.c ``translate_page_flags``);
- ``kmem VADDR`` on slab pages: the slab cache crash finds for the page
  (the NAME column after the ``CACHE`` header);

and the answers are compared with pagewho's decoded page and owner.

Two crash builds: bookworm's (the host's, 8.0.2) and forky's (9.0.x, from
a debootstrap'd chroot).  Where a build cannot read a kernel the test is
skipped with crash's own words, never passed.
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, Optional, Tuple

import crashtool
import pytest
from crash_common import drgn_target, planted_pfns, spread_pfns, uniq, vmcore_of

from pagewho.command import report_of
from pagewho.kernel import kernel_of
from pagewho.target import TargetError

BUILDS = ("host", "forky")
MARK = 0x5A5A0000  # "eval MARK+i" separates the commands' outputs
TIMEOUT = int(os.environ.get("PAGEWHO_CRASH_TIMEOUT", "900"))

_targets: Dict[str, object] = {}


def _dump_id(vmcore: str) -> str:
    st = os.stat(vmcore)
    return "%s@%d" % (vmcore, st.st_mtime_ns)


def _target(s, vmcore):
    key = _dump_id(vmcore)  # a rebuilt sample is another dump
    if key not in _targets:
        _targets.clear()  # one dump's model in memory at a time
        _targets[key] = drgn_target(s, vmcore)
    return _targets[key]


def split_marked(out: str, n: int) -> List[str]:
    """The output of each of the n marked commands (see :func:`script`)."""
    parts: List[List[str]] = [[] for _ in range(n)]
    cur: Optional[int] = None
    for line in out.splitlines():
        m = re.match(r"\s*decimal: (\d+)", line)
        if m and MARK <= int(m.group(1)) < MARK + n:
            cur = int(m.group(1)) - MARK
            continue
        if re.match(r"\s*(hexadecimal|octal|binary):", line):
            continue
        if cur is not None:
            parts[cur].append(line)
    return ["\n".join(p) for p in parts]


def script(commands: List[str]) -> List[str]:
    out = []
    for i, c in enumerate(commands):
        out += ["eval %d" % (MARK + i), c]
    return out


def parse_kmem_p(text: str) -> Optional[Tuple[int, int, int, List[str]]]:
    """(page address, physical address, flags, flag names) from ``kmem -p``."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*PAGE\s+PHYSICAL\s+MAPPING\s+INDEX\s+CNT\s+FLAGS", line):
            for row in lines[i + 1:]:
                tok = row.split()
                if len(tok) >= 6 and all(re.fullmatch(r"[0-9a-f]+", t) for t in tok[:4]):
                    names = tok[6].split(",") if len(tok) > 6 else []
                    return int(tok[0], 16), int(tok[1], 16), int(tok[5], 16), names
            return None
    return None


def parse_kmem_cache(text: str) -> Optional[str]:
    """The slab cache name ``kmem VADDR`` shows for an address, or None."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*CACHE\s+.*\bNAME\s*$", line) and i + 1 < len(lines):
            tok = lines[i + 1].split()
            if tok and re.fullmatch(r"[0-9a-f]+", tok[0]):
                return tok[-1]
    return None


def parse_release(text: str) -> Optional[str]:
    m = re.search(r"^\s*RELEASE:\s*(\S+)", text, re.M)
    return m.group(1) if m else None


def slab_cache_name(report) -> Optional[str]:
    d = report.owner.detail
    for key in ("cache", "cache_name", "slab_cache", "name"):
        v = d.get(key)
        if isinstance(v, dict):
            v = v.get("name")
        if isinstance(v, str):
            return v
    return None


def choose_pfns(s, t) -> Tuple[List[int], List[int]]:
    """(pfns for kmem -p, slab pfns for kmem VADDR)."""
    k = kernel_of(t)
    candidates = uniq(planted_pfns(s, 3) + spread_pfns(k.max_pfn, 24))
    reports = {}
    for pfn in candidates:
        try:
            reports[pfn] = report_of(t, pfn)
        except TargetError:
            continue
    slabs = [p for p, r in reports.items() if r.owner.kind == "slab"]
    # make sure some slab pages are in: walk up from the kernel image area
    pfn = 0x1000
    while len(slabs) < 6 and pfn < k.max_pfn:
        try:
            r = report_of(t, pfn)
            if r.owner.kind == "slab" and r.page.pfn == r.head.pfn:
                slabs.append(pfn)
                reports[pfn] = r
                pfn += 64
        except TargetError:
            pass
        pfn += 7
    return list(reports), slabs[:8]


class CrashRun:
    """One batch crash session on a sample: ``sys``, ``kmem -p`` for each
    pfn, ``kmem VADDR`` for each slab pfn; shared by the two tests."""

    def __init__(self, build: str, s) -> None:
        self.vmcore = vmcore_of(s)
        self.dump_id = _dump_id(self.vmcore)
        self.t = _target(s, self.vmcore)
        self.k = kernel_of(self.t)
        self.release = self.t.release()
        self.pfns, self.slabs = choose_pfns(s, self.t)
        k = self.k
        commands = ["sys"]
        commands += ["kmem -p %x" % (pfn << k.page_shift) for pfn in self.pfns]
        commands += ["kmem %x" % (k.page_offset + (pfn << k.page_shift)) for pfn in self.slabs]
        self.version = crashtool.crash_version(build)
        self.skip: Optional[str] = None
        self.parts: List[str] = []
        try:
            out = crashtool.run(build, str(s.vmlinux), self.vmcore, script(commands), timeout=TIMEOUT)
        except crashtool.CrashUnavailable as e:
            self.skip = "%s cannot read %s: %s" % (self.version, self.release, e)
            return
        # crash and pagewho must have read the same file
        assert _dump_id(self.vmcore) == self.dump_id, "the sample was rebuilt during the test"
        self.parts = split_marked(out, len(commands))
        release = parse_release(self.parts[0])
        if release is None:
            first = next((ln for ln in out.splitlines() if ln.strip()), "no output")
            self.skip = "%s cannot read %s: no 'sys' output (%s)" % (self.version, self.release, first[:200])
        else:
            assert release == self.release, "crash and pagewho read different kernels"

    def kmem_p(self, i: int) -> str:
        return self.parts[1 + i]

    def kmem_vaddr(self, j: int) -> str:
        return self.parts[1 + len(self.pfns) + j]


_runs: Dict[Tuple[str, str], CrashRun] = {}


def crash_run(build: str, s) -> CrashRun:
    why = crashtool.available(build)
    if why:
        pytest.skip("crash (%s) unavailable: %s" % (build, why))
    key = (build, _dump_id(vmcore_of(s)))
    if key not in _runs:
        _runs.clear()
        _runs[key] = CrashRun(build, s)
    run = _runs[key]
    if run.skip:
        pytest.skip(run.skip)
    return run


@pytest.mark.parametrize("build", BUILDS)
def test_kmem_p_agrees_with_pagewho(build, sample):
    """crash's struct page, flags word and flag names == pagewho's decoded page."""
    run = crash_run(build, sample)
    t, k = run.t, run.k
    compared = 0
    problems = []
    for i, pfn in enumerate(run.pfns):
        got = parse_kmem_p(run.kmem_p(i))
        if got is None:
            problems.append("pfn %#x: crash printed no kmem -p line: %r" % (pfn, run.kmem_p(i)[:200]))
            continue
        page, phys, flags, names = got
        r = report_of(t, pfn)
        ours = r.flags()
        if page != k.pfn_to_page(pfn) or phys != pfn << k.page_shift:
            problems.append("pfn %#x: crash's struct page %#x phys %#x" % (pfn, page, phys))
        elif flags != r.page.flags:
            problems.append("pfn %#x: flags crash %#x pagewho %#x" % (pfn, flags, r.page.flags))
        elif sorted(names) != sorted(ours):
            problems.append("pfn %#x: flag names crash %s pagewho %s" % (pfn, names, ours))
        compared += 1
    if compared == 0:
        pytest.skip("%s cannot read %s: no kmem -p answer (%s)"
                    % (run.version, run.release, (problems or ["?"])[0]))
    assert not problems, "%s on %s:\n  %s" % (run.version, run.release, "\n  ".join(problems))
    print("%s on %s: %d struct pages agree" % (run.version, run.release, compared))


# crash reporting that it does not know this kernel's layout (e.g. memory.c
# compound_head() on 7.1+'s compound_info): crash's limit, not a disagreement
CRASH_INTERNAL = re.compile(r"invalid structure member offset: \S+|FILE: \S+\s+LINE: \d+\s+FUNCTION: \S+")


@pytest.mark.parametrize("build", BUILDS)
def test_kmem_slab_cache_agrees_with_pagewho(build, sample):
    """The slab cache crash finds for a slab page == the one pagewho names."""
    run = crash_run(build, sample)
    assert run.slabs, "pagewho found no slab page to ask crash about"
    problems = []
    crash_limits = []
    for j, pfn in enumerate(run.slabs):
        text = run.kmem_vaddr(j)
        cache = parse_kmem_cache(text)
        ours = slab_cache_name(report_of(run.t, pfn))
        if cache is None:
            limit = CRASH_INTERNAL.findall(text)
            if limit:
                crash_limits.append("; ".join(limit))
            else:
                problems.append("pfn %#x: crash found no slab cache: %r" % (pfn, text[:300]))
        elif ours is None:
            problems.append("pfn %#x: crash says cache %s, pagewho names none" % (pfn, cache))
        elif cache != ours:
            problems.append("pfn %#x: cache crash %s pagewho %s" % (pfn, cache, ours))
    assert not problems, "%s on %s:\n  %s" % (run.version, run.release, "\n  ".join(problems))
    if len(crash_limits) == len(run.slabs):
        pytest.skip("%s cannot name slab caches on %s: kmem: %s"
                    % (run.version, run.release, crash_limits[0]))
    assert not crash_limits, "crash failed on some slab pages only: %s" % crash_limits
    print("%s on %s: %d slab caches agree" % (run.version, run.release, len(run.slabs)))


# -- the parsers, on crash's documented output shapes ----------------------------------

KMEM_P = """\
      PAGE        PHYSICAL      MAPPING       INDEX CNT FLAGS
ffffea0000040000  1000000                0        0  1 fffffc0000200 slab
"""

KMEM_SLAB = """\
CACHE             OBJSIZE  ALLOCATED     TOTAL  SLABS  SSIZE  NAME
ffff888100042a00      192       1234      1260     60     4k  kmalloc-192
  SLAB              MEMORY            NODE  TOTAL  ALLOCATED  FREE
  ffffea0004000000  ffff888100000000     0     21         21     0
"""


def test_parsers():
    assert parse_kmem_p(KMEM_P) == (0xFFFFEA0000040000, 0x1000000, 0xFFFFFC0000200, ["slab"])
    assert parse_kmem_cache(KMEM_SLAB) == "kmalloc-192"
    assert parse_kmem_p("kmem: invalid address\n") is None
    out = "hexadecimal: 5a5a0000\n    decimal: %d\nA\nhexadecimal: 1\n    decimal: %d\nB\n" % (MARK, MARK + 1)
    assert split_marked(out, 2) == ["A", "B"]
