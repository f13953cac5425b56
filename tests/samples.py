"""Opening the lab's sample dumps once per test session."""

from __future__ import annotations

from typing import Dict

from pagewho.drgn_target import DrgnTarget

_OPEN: Dict[str, DrgnTarget] = {}


def open_sample(sample, kdump: bool = False) -> DrgnTarget:
    """A DrgnTarget on the sample's ELF (or kdump-compressed) vmcore, shared
    by every test of the session (targets are read-only)."""
    path = sample.vmcore_kdump if kdump else sample.vmcore_elf
    key = str(path)
    if key not in _OPEN:
        _OPEN[key] = DrgnTarget.open(str(path), str(sample.vmlinux))
    return _OPEN[key]
