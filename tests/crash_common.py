"""Helpers shared by the crash front-end tests (stand-in PyKdump and real crash)."""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, Iterable, List, Optional

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
CRASHEXT = os.path.join(REPO, "crashext")
STANDIN = os.path.join(TESTS, "pykdump")
PROGRAM = os.path.join(CRASHEXT, "pagewho.py")

# The sample kernels (vmcores-sample/lab.py); the order is oldest first.
SUITES = ("bullseye", "bookworm", "trixie", "forky")


def lab():
    """vmcores-sample/lab.py, or a skip saying it is not there yet."""
    path = os.path.join(REPO, "vmcores-sample")
    if not os.path.exists(os.path.join(path, "lab.py")):
        pytest.skip("vmcores-sample/lab.py not present")
    if path not in sys.path:
        sys.path.insert(0, path)
    import lab as lab_module

    return lab_module


def sample(suite: str):
    """The sample dump of ``suite`` (built or fetched by lab on demand)."""
    mod = lab()
    try:
        return mod.sample(suite)
    except Exception as e:  # the lab says why it cannot provide it
        pytest.skip("no %s sample: %s" % (suite, str(e).splitlines()[0] if str(e) else type(e).__name__))


def vmcore_of(s) -> str:
    """The dump crash and the stand-in read: kdump-compressed when there is one."""
    for attr in ("vmcore_kdump", "vmcore_elf"):
        path = getattr(s, attr, None)
        if path and os.path.exists(str(path)):
            return str(path)
    pytest.skip("sample %s has no vmcore file" % getattr(s, "release", "?"))
    raise AssertionError  # unreachable


def drgn_target(s, vmcore: Optional[str] = None):
    from pagewho.drgn_target import DrgnTarget

    return DrgnTarget.open(vmcore or vmcore_of(s), str(s.vmlinux))


def _ints_under_pfn_keys(obj: Any, out: List[int], under: bool = False) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _ints_under_pfn_keys(v, out, under or "pfn" in str(k).lower())
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _ints_under_pfn_keys(v, out, under)
    elif under and isinstance(obj, int) and not isinstance(obj, bool) and obj > 0:
        out.append(obj)


def planted_pfns(s, limit: int = 24) -> List[int]:
    """pfns the sample's workload put in place (from its truth), deduplicated."""
    out: List[int] = []
    _ints_under_pfn_keys(getattr(s, "truth", {}) or {}, out)
    seen: Dict[int, None] = {}
    for p in out:
        seen.setdefault(p, None)
    pfns = list(seen)
    if len(pfns) > limit:
        step = len(pfns) / limit
        pfns = [pfns[int(i * step)] for i in range(limit)]
    return pfns


def spread_pfns(max_pfn: int, count: int = 24) -> List[int]:
    """Low pfns (BIOS, kernel image area) and an even spread up to max_pfn."""
    low = [0, 1, 0x9F, 0x100, 0x1000]
    step = max(1, max_pfn // count)
    return sorted(set([p for p in low if p < max_pfn] + list(range(step // 2, max_pfn, step))))


def uniq(xs: Iterable[int]) -> List[int]:
    return list(dict.fromkeys(xs))
