"""Helpers shared by the crash front-end tests (stand-in PyKdump and real crash)."""

from __future__ import annotations

import os
from typing import Dict, Iterable, List, Optional

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
CRASHEXT = os.path.join(REPO, "crashext")
STANDIN = os.path.join(TESTS, "pykdump")
PROGRAM = os.path.join(CRASHEXT, "pagewho.py")


def vmcore_of(s) -> str:
    """The dump crash and the stand-in read: kdump-compressed when there is one."""
    for attr in ("vmcore_kdump", "vmcore_elf"):
        path = getattr(s, attr, None)
        if path and os.path.exists(str(path)):
            return str(path)
    raise AssertionError("sample %s has no vmcore file" % getattr(s, "release", "?"))


def standin_session(standin, s, vmcore: str, monkeypatch, tmp_path) -> None:
    """Put the stand-in crash on ``vmcore`` with pagewho registered the
    documented way (PYKDUMPPATH + epython register.py), run from a scratch
    directory."""
    if standin.STATE.vmcore != os.path.abspath(vmcore):
        standin.open_dump(vmcore, str(s.vmlinux))
    standin.STATE.commands.pop("pagewho", None)
    monkeypatch.setenv("PYKDUMPPATH", CRASHEXT)
    monkeypatch.chdir(tmp_path)
    standin.reset_audit()
    assert standin.command("epython %s" % os.path.join(CRASHEXT, "register.py")) == ""


def drgn_target(s, vmcore: Optional[str] = None):
    from pagewho.drgn_target import DrgnTarget

    return DrgnTarget.open(vmcore or vmcore_of(s), str(s.vmlinux))


def planted_pfns(s, per_kind: int = 3) -> List[int]:
    """pfns the sample's workload put in place (truth["records"], see
    vmcores-sample/README.md): a few of each planted kind."""
    by_kind: Dict[str, List[int]] = {}
    for rec in (getattr(s, "truth", None) or {}).get("records", []):
        pfn = rec.get("pfn")
        if isinstance(pfn, int) and pfn > 0:
            by_kind.setdefault(str(rec.get("kind")), []).append(pfn)
    out: List[int] = []
    for pfns in by_kind.values():
        out += pfns[:per_kind]
    return uniq(out)


def spread_pfns(max_pfn: int, count: int = 24) -> List[int]:
    """Low pfns (BIOS, kernel image area) and an even spread up to max_pfn."""
    low = [0, 1, 0x9F, 0x100, 0x1000]
    step = max(1, max_pfn // count)
    return sorted(set([p for p in low if p < max_pfn] + list(range(step // 2, max_pfn, step))))


def uniq(xs: Iterable[int]) -> List[int]:
    return list(dict.fromkeys(xs))
