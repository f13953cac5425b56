"""pagewho's Target over PyKdump, and the crash command's body.

Runs inside crash's embedded Python (PyKdump's ``mpykdump.so``), whose
stdlib is trimmed: only modules listed as present in shared/PYKDUMP.md are
used here (sys, re, struct, typing).

Only these PyKdump calls are used (conventions from PyKdump's
Extension/functions.c and pykdump/wrapcrash.py, see shared/PYKDUMP.md):

- ``readmem(addr, size)``: bytes; raises ``crash.error`` when the read
  fails and ``IndexError`` for address 0;
- ``sym2addr(name)``: 0 when the symbol is missing;
- ``addr2sym(addr, 1)``: ``(name, offset)``, or ``(None, None)``;
- ``struct_size(t)``, ``member_offset(s, m)``, ``member_size(s, m)``: -1
  when absent (``member_offset`` takes dotted paths, anonymous members are
  flattened into their parent; ``member_size`` takes one member name and
  raises for an unknown struct);
- ``enumerator_value(name)``: None when absent; ``EnumInfo("enum X")``: a
  dict of enumerators, ``TypeError`` when unknown;
- ``sys_info.DUMPFILE``, ``.RELEASE``, ``.kernel`` (crash's ``sys``).

``exec_crash_command`` is not needed: VMCOREINFO is read from the kernel's
own ``vmcoreinfo_data``/``vmcoreinfo_size`` (kernel/crash_core.c), the
release from ``init_uts_ns``.  Nothing here writes to memory.

The module stays imported for the whole crash session (PyKdump keeps one
interpreter), so the target built for a dump is cached here, keyed by the
dump's identity (:func:`dump_identity`); a different dump, even in the same
interpreter, gets a new target and so a new kernel model.
"""

from __future__ import annotations

import sys
from typing import Callable, Dict, List, Optional, Tuple

import crash
from pykdump.API import (
    EnumInfo,
    addr2sym,
    enumerator_value,
    member_offset,
    member_size,
    readmem,
    struct_size,
    sym2addr,
    sys_info,
)

from pagewho import command
from pagewho.target import FaultError, Target, TargetError

# VMCOREINFO_BYTES is one page (include/linux/crash_core.h); refuse absurd sizes
_VMCOREINFO_MAX = 1 << 16
_NEW_UTS_LEN = 64


def _none_if_negative(value: int) -> Optional[int]:
    return None if value is None or value < 0 else value


class PykdumpTarget(Target):
    """A :class:`~pagewho.target.Target` over PyKdump's API."""

    name = "crash"

    def __init__(self, dumpfile: str = "") -> None:
        # crash's ``sys`` shows /dev/mem, /dev/crash or /proc/kcore for a live system
        self.live = dumpfile.startswith(("/dev/", "/proc/"))

    def read(self, address: int, size: int) -> bytes:
        if size <= 0:
            return b""
        if address < 0 or address + size > 1 << 64:
            raise FaultError(address, size, "outside the address space")
        try:
            data = readmem(address, size)
        except IndexError:
            raise FaultError(address, size, "NULL pointer") from None
        except crash.error as e:
            raise FaultError(address, size, str(e)) from None
        except (OverflowError, ValueError, TypeError) as e:
            raise FaultError(address, size, str(e)) from None
        if len(data) != size:
            raise FaultError(address, size, "short read")
        return data

    def symbol(self, name: str) -> Optional[int]:
        try:
            return sym2addr(name) or None
        except crash.error:
            return None

    def sizeof(self, type_name: str) -> Optional[int]:
        return _none_if_negative(struct_size(type_name))

    def offsetof(self, type_name: str, member: str) -> Optional[int]:
        return _none_if_negative(member_offset(type_name, member))

    def member_size(self, type_name: str, member: str) -> Optional[int]:
        # PyKdump's member_size takes one member name (getStructInfo(s)[m]);
        # a dotted path is answered as absent rather than guessed.
        if "." in member:
            return None
        try:
            return _none_if_negative(member_size(type_name, member))
        except (TypeError, KeyError, crash.error):
            return None

    def enumerators(self, enum_name: str) -> Optional[Dict[str, int]]:
        try:
            info = EnumInfo(enum_name)
        except (TypeError, KeyError, crash.error):
            return None
        return {str(k): int(v) for k, v in info.items()}

    def enum_value(self, name: str) -> Optional[int]:
        try:
            value = enumerator_value(name)
        except crash.error:
            return None
        return None if value is None else int(value)

    def vmcoreinfo(self) -> Optional[str]:
        data_sym = self.symbol("vmcoreinfo_data")
        size_sym = self.symbol("vmcoreinfo_size")
        if data_sym is None or size_sym is None:
            return None
        try:
            data = self.read_ptr(data_sym)
            size = self.read_u64(size_sym)
            if not data or not 0 < size <= _VMCOREINFO_MAX:
                return None
            return self.read(data, size).decode("ascii", "replace")
        except FaultError:
            return None

    def release(self) -> str:
        uts = self.symbol("init_uts_ns")
        off = self.offsetof("struct uts_namespace", "name.release")
        if uts is not None and off is not None:
            try:
                raw = self.read_cstring(uts + off, _NEW_UTS_LEN + 1)
                if raw:
                    return raw.decode("ascii", "replace")
            except FaultError:
                pass
        release = str(sys_info.RELEASE)
        if not release:
            raise TargetError("cannot find the kernel release in the dump")
        return release

    def symbolize(self, address: int) -> Optional[str]:
        try:
            name, offset = addr2sym(address, 1)
        except (crash.error, OverflowError, TypeError, ValueError):
            return None
        if not name:
            return None
        return "%s+%#x" % (name, offset)


# -- the per-dump cache ---------------------------------------------------------

_cache: Dict[str, object] = {"key": None, "target": None}


def dump_identity() -> Tuple[object, ...]:
    """What makes this dump this dump, cheaply: crash's dump file name, the
    kernel release, and the address and text of ``linux_banner`` (which
    also moves with KASLR)."""
    banner_addr = sym2addr("linux_banner")
    banner = b""
    if banner_addr:
        try:
            banner = readmem(banner_addr, 160)
        except (crash.error, IndexError):
            banner = b""
    return (str(sys_info.DUMPFILE), str(sys_info.RELEASE), banner_addr, banner)


def current_target() -> PykdumpTarget:
    """The target for the dump crash has open now, reused while it is the same."""
    key = dump_identity()
    live = str(key[0]).startswith(("/dev/", "/proc/"))
    # A live kernel (crash on /proc/kcore, /dev/crash) changes under us:
    # learn it afresh each command rather than trust what the last one saw.
    if live or _cache["key"] != key or _cache["target"] is None:
        _cache["target"] = None  # drop the old dump's model before building
        _cache["target"] = PykdumpTarget(str(key[0]))
        _cache["key"] = key
    return _cache["target"]  # type: ignore[return-value]


# -- the command ----------------------------------------------------------------

def write(text: str) -> None:
    """Print and flush: crash in batch mode (``crash -i FILE``) loses
    unflushed output (shared/PYKDUMP.md)."""
    out = sys.stdout
    try:
        out.write(text)
    except UnicodeEncodeError:
        out.write(text.encode("ascii", "backslashreplace").decode("ascii"))
    out.flush()


def main(argv: List[str], out: Callable[[str], None] = write) -> int:
    """``pagewho ARGV`` at the crash prompt: never a traceback, one line for
    any failure, and the crash session goes on."""
    try:
        return command.run(current_target(), argv, out)
    except KeyboardInterrupt:
        out("pagewho: interrupted\n")
        return 130
    except TargetError as e:
        out("pagewho: %s\n" % _one_line(str(e)))
        return 1
    except crash.error as e:
        out("pagewho: crash: %s\n" % _one_line(str(e)))
        return 1
    except MemoryError:
        out("pagewho: out of memory\n")
        return 1
    except Exception as e:  # a bug in pagewho: still one line, still no traceback
        out("pagewho: internal error: %s: %s (please report)\n"
            % (type(e).__name__, _one_line(str(e))))
        return 70


def _one_line(text: str) -> str:
    """One printable line: no newlines, no escape sequences."""
    line = " ".join(text.split())
    return "".join(c if c.isprintable() else "\\x%02x" % ord(c) for c in line)[:300]

