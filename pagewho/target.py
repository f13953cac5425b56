"""The target protocol: everything pagewho asks of a debugger.

One small subclass per debugger implements these methods (``drgn_target``,
``gdb/pagewho.py``, ``crashext/pagewho.py``).  The core talks to nothing
else, so every front end gives the same answer for the same memory.

Conventions, whatever the debugger:

- absent things are ``None`` (a missing symbol, type, member or enumerator),
  never an exception and never a sentinel such as 0 or -1;
- unreadable memory raises :class:`FaultError`; any other problem the user
  must hear about raises :class:`TargetError` with a one-line message;
- a target never writes to the kernel it reads.  There is no write method,
  and adapters must not add one.
"""

from __future__ import annotations

import struct
from typing import Dict, Optional


class TargetError(Exception):
    """A problem to show the user as one line (no traceback)."""


class FaultError(TargetError):
    """Memory at ``address`` could not be read (not in the dump, filtered out,
    not mapped, or the debugger's read failed)."""

    def __init__(self, address: int, size: int = 0, why: str = "") -> None:
        self.address = address
        self.size = size
        self.why = why
        text = "cannot read %d bytes at %#x" % (size, address)
        if why:
            text += " (%s)" % why
        super().__init__(text)


class Target:
    """Base class of the debugger adapters; see the module docstring."""

    #: short name of the debugger, e.g. "drgn", "gdb", "crash"
    name = "abstract"
    #: True when memory can change under us (a live kernel)
    live = False

    def read(self, address: int, size: int) -> bytes:
        """Return ``size`` bytes of kernel virtual memory at ``address``."""
        raise NotImplementedError

    def symbol(self, name: str) -> Optional[int]:
        """Address of the global symbol ``name`` (KASLR-relocated), or None."""
        raise NotImplementedError

    def sizeof(self, type_name: str) -> Optional[int]:
        """``sizeof(type_name)`` for e.g. "struct page", or None if unknown."""
        raise NotImplementedError

    def offsetof(self, type_name: str, member: str) -> Optional[int]:
        """Byte offset of ``member`` in ``type_name``, or None.

        ``member`` may be dotted ("_mapcount.counter", "lru.next") and is
        looked up through anonymous unions and structs, as C does.
        """
        raise NotImplementedError

    def member_size(self, type_name: str, member: str) -> Optional[int]:
        """``sizeof(((type_name *)0)->member)``, or None."""
        raise NotImplementedError

    def enumerators(self, enum_name: str) -> Optional[Dict[str, int]]:
        """All enumerators of ``enum_name`` ("enum pageflags"), or None."""
        raise NotImplementedError

    def enum_value(self, name: str) -> Optional[int]:
        """Value of the enumerator ``name`` ("PG_slab") in any enum, or None."""
        raise NotImplementedError

    def vmcoreinfo(self) -> Optional[str]:
        """The raw VMCOREINFO text ("KEY=VALUE" lines), or None."""
        raise NotImplementedError

    def release(self) -> str:
        """The kernel release of the memory image (``init_uts_ns``)."""
        raise NotImplementedError

    def symbolize(self, address: int) -> Optional[str]:
        """"symbol+0xoffset" for a text/data address, or None."""
        return None

    def vmlinux_release(self) -> Optional[str]:
        """The release the vmlinux file itself carries (its ``linux_banner``),
        or None when the debugger cannot tell.  Only used to explain a
        vmlinux that does not match the memory."""
        return None

    # -- helpers built on read(); adapters need not override them ---------

    def read_u8(self, address: int) -> int:
        return self.read(address, 1)[0]

    def read_u16(self, address: int) -> int:
        return struct.unpack("<H", self.read(address, 2))[0]

    def read_u32(self, address: int) -> int:
        return struct.unpack("<I", self.read(address, 4))[0]

    def read_s32(self, address: int) -> int:
        return struct.unpack("<i", self.read(address, 4))[0]

    def read_u64(self, address: int) -> int:
        return struct.unpack("<Q", self.read(address, 8))[0]

    read_ulong = read_u64
    read_ptr = read_u64

    def read_cstring(self, address: int, limit: int = 256) -> bytes:
        """Bytes of the NUL-terminated string at ``address``, at most ``limit``.

        Reads in small steps so a string near the end of a mapping does not
        fault because of the bytes after it.
        """
        out = b""
        step = 64
        while len(out) < limit:
            chunk_addr = address + len(out)
            # stay inside one page so a short string never faults on the next
            room = 4096 - (chunk_addr & 4095)
            n = min(step, room, limit - len(out))
            chunk = self.read(chunk_addr, n)
            nul = chunk.find(b"\0")
            if nul >= 0:
                return out + chunk[:nul]
            out += chunk
        return out
