"""A Target over a real dump with changes laid on top, for the robustness,
safety and fuzz tests (tests/test_robustness.py, tests/test_fuzz.py).

``OverlayTarget(inner)`` answers like ``inner`` except where told otherwise:

- ``patch(address, data)``: reads see ``data`` at ``address`` (kernel
  virtual), over the real memory -- a corrupted struct page, a hostile slab
  name, a hidden memory section;
- ``hide(start, end)``: reads touching [start, end) fault, as memory a
  filtered dump left out;
- ``symbols``, ``info``: symbol addresses and VMCOREINFO text to pretend;
- ``interrupt_after``: raise KeyboardInterrupt on that read (Ctrl-C);
- ``budget(reads, seconds)``: raise :class:`BudgetExceeded` when one
  operation reads too often or too long (an unbounded walk).

It never writes to ``inner``: patches live in this object only.
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional, Tuple

from pagewho.target import FaultError, Target

_UNSET = object()


class BudgetExceeded(BaseException):
    """A walk read more than its budget.  A BaseException, like
    KeyboardInterrupt, so no ``except Exception`` in pagewho can hide it."""


class OverlayTarget(Target):
    name = "overlay"

    def __init__(self, inner: Target, info=_UNSET, symbols: Optional[Dict[str, int]] = None,
                 symbol_shift: int = 0, vmlinux_release=_UNSET) -> None:
        self.inner = inner
        self.live = inner.live
        self.patches: Dict[int, bytes] = {}
        self.holes: List[Tuple[int, int]] = []
        self.info = info
        self.symbols = dict(symbols or {})
        #: added to every kernel-image symbol: a vmlinux of another build
        self.symbol_shift = symbol_shift
        self._vmlinux_release = vmlinux_release
        self.interrupt_after: Optional[int] = None
        self.reads = 0
        self.max_reads: Optional[int] = None
        self.max_seconds: Optional[float] = None
        self._start = 0.0
        self.worst_reads = 0

    # -- changes --------------------------------------------------------------

    def patch(self, address: int, data: bytes) -> None:
        self.patches[address] = bytes(data)

    def hide(self, start: int, end: int) -> None:
        self.holes.append((start, end))

    def clear(self) -> None:
        self.patches.clear()
        self.holes.clear()

    def budget(self, reads: Optional[int], seconds: Optional[float]) -> None:
        """Start counting one operation against a budget (None: no limit)."""
        self.reads = 0
        self.max_reads = reads
        self.max_seconds = seconds
        self._start = time.monotonic()

    # -- protocol -------------------------------------------------------------

    def read(self, address: int, size: int) -> bytes:
        self.reads += 1
        if self.reads > self.worst_reads:
            self.worst_reads = self.reads
        if self.interrupt_after is not None and self.reads >= self.interrupt_after:
            raise KeyboardInterrupt
        if self.max_reads is not None and self.reads > self.max_reads:
            raise BudgetExceeded("more than %d reads" % self.max_reads)
        if self.max_seconds is not None and self.reads % 64 == 0 \
                and time.monotonic() - self._start > self.max_seconds:
            raise BudgetExceeded("more than %.1f s" % self.max_seconds)
        end = address + size
        for a, b in self.holes:
            if a < end and address < b:
                raise FaultError(address, size, "hidden by the test")
        data = self.inner.read(address, size)
        if not self.patches:
            return data
        buf = None
        for pa, pdata in self.patches.items():
            pe = pa + len(pdata)
            if pa < end and address < pe:
                if buf is None:
                    buf = bytearray(data)
                lo = max(pa, address)
                hi = min(pe, end)
                buf[lo - address:hi - address] = pdata[lo - pa:hi - pa]
        return data if buf is None else bytes(buf)

    def symbol(self, name: str) -> Optional[int]:
        if name in self.symbols:
            return self.symbols[name]
        addr = self.inner.symbol(name)
        if addr is not None and self.symbol_shift and addr >= 0xFFFFFFFF80000000:
            addr += self.symbol_shift
        return addr

    def sizeof(self, type_name: str) -> Optional[int]:
        return self.inner.sizeof(type_name)

    def offsetof(self, type_name: str, member: str) -> Optional[int]:
        return self.inner.offsetof(type_name, member)

    def member_size(self, type_name: str, member: str) -> Optional[int]:
        return self.inner.member_size(type_name, member)

    def enumerators(self, enum_name: str):
        return self.inner.enumerators(enum_name)

    def enum_value(self, name: str) -> Optional[int]:
        return self.inner.enum_value(name)

    def vmcoreinfo(self) -> Optional[str]:
        return self.inner.vmcoreinfo() if self.info is _UNSET else self.info

    def release(self) -> str:
        # as the gdb and crash adapters do: init_uts_ns at the (possibly
        # pretended) symbol address, read through this target
        uts = self.symbol("init_uts_ns")
        off = self.offsetof("struct uts_namespace", "name.release")
        if uts is None or off is None:
            return self.inner.release()
        return self.read_cstring(uts + off, 65).decode("ascii", "replace")

    def vmlinux_release(self) -> Optional[str]:
        if self._vmlinux_release is _UNSET:
            return self.inner.vmlinux_release()
        return self._vmlinux_release  # type: ignore[return-value]

    def symbolize(self, address: int) -> Optional[str]:
        return self.inner.symbolize(address)
