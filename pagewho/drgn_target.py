"""The target protocol over drgn (vmcores, /proc/kcore)."""

from __future__ import annotations

import struct
from typing import Dict, Optional, Tuple

import drgn

from .elffile import vmlinux_identity
from .target import FaultError, Target, TargetError

#: what drgn and libkdumpfile say when a read runs past the end of a dump
_CUT_SHORT = ("short read", "Decompres", "Cannot read")


class DrgnTarget(Target):
    """A :class:`Target` reading through a ``drgn.Program``."""

    name = "drgn"

    def __init__(self, prog: drgn.Program, live: bool = False) -> None:
        self.prog = prog
        self.live = live
        self._types: Dict[str, Optional[drgn.Type]] = {}
        self._enum_cache: Optional[Dict[str, int]] = None
        #: the vmlinux file given to open(), if any
        self.vmlinux_path: Optional[str] = None
        #: (file size, size its ELF headers need) of a truncated ELF vmcore
        self.truncated: Optional[Tuple[int, int]] = None

    @classmethod
    def open(cls, vmcore: Optional[str], vmlinux: Optional[str]) -> DrgnTarget:
        """Open a vmcore (ELF or kdump-compressed), or the running kernel
        through /proc/kcore when ``vmcore`` is None."""
        prog = drgn.Program()
        try:
            if vmcore is None:
                prog.set_kernel()
            else:
                prog.set_core_dump(vmcore)
        except (OSError, ValueError, drgn.FaultError) as e:
            raise TargetError("cannot open %s: %s" % (vmcore or "/proc/kcore", e)) from None
        try:
            if vmlinux:
                prog.load_debug_info([vmlinux])
            else:
                prog.load_default_debug_info()
        except drgn.MissingDebugInfoError as e:
            # module debug info is optional; vmlinux is not
            if not _has_vmlinux(prog):
                raise TargetError("no kernel debug info: %s" % str(e).splitlines()[0]) from None
        except (OSError, ValueError) as e:
            raise TargetError("cannot load %s: %s" % (vmlinux, e)) from None
        if vmlinux and not _has_vmlinux(prog):
            # drgn ignores a vmlinux whose build ID is not the dump's
            raise TargetError(_mismatch_message(prog, vmlinux))
        target = cls(prog, live=vmcore is None)
        target.vmlinux_path = vmlinux
        if vmcore is not None:
            target.truncated = _elf_truncation(vmcore) or _kdump_truncation(vmcore)
        return target

    # -- protocol ---------------------------------------------------------

    def read(self, address: int, size: int) -> bytes:
        try:
            return self.prog.read(address, size)
        except drgn.FaultError as e:
            why = str(e)
            if self.truncated and any(m in why for m in _CUT_SHORT):
                why = "not in the dump: the dump file is truncated (%d of %d bytes)" % self.truncated
            elif "Excluded page" in why:
                why = "not in the dump: filtered out (makedumpfile -d)"
            raise FaultError(address, size, why) from None
        except (ValueError, OverflowError) as e:
            raise FaultError(address, size, str(e)) from None

    def _type(self, type_name: str) -> Optional[drgn.Type]:
        if type_name not in self._types:
            try:
                self._types[type_name] = self.prog.type(type_name)
            except LookupError:
                self._types[type_name] = None
        return self._types[type_name]

    def symbol(self, name: str) -> Optional[int]:
        try:
            return self.prog.symbol(name).address
        except LookupError:
            pass
        try:
            return self.prog[name].address_
        except (LookupError, ValueError):
            return None

    def sizeof(self, type_name: str) -> Optional[int]:
        t = self._type(type_name)
        if t is None:
            return None
        try:
            return drgn.sizeof(t)
        except TypeError:
            return None

    def offsetof(self, type_name: str, member: str) -> Optional[int]:
        t = self._type(type_name)
        if t is None:
            return None
        try:
            return drgn.offsetof(t, member)
        except (LookupError, ValueError, TypeError):
            return None

    def member_size(self, type_name: str, member: str) -> Optional[int]:
        t = self._type(type_name)
        if t is None:
            return None
        try:
            mt = t
            for part in member.split("."):
                mt = mt.member(part).type
            return drgn.sizeof(mt)
        except (LookupError, ValueError, TypeError):
            return None

    def enumerators(self, enum_name: str) -> Optional[Dict[str, int]]:
        t = self._type(enum_name)
        if t is None or t.enumerators is None:
            return None
        return {e.name: e.value for e in t.enumerators}

    def enum_value(self, name: str) -> Optional[int]:
        try:
            obj = self.prog.constant(name)
        except LookupError:
            return None
        return obj.value_()

    def vmcoreinfo(self) -> Optional[str]:
        try:
            data = self.prog["VMCOREINFO"]
        except KeyError:
            data = None
        if data is not None:
            try:
                return bytes(data.string_()).decode("ascii", "replace")
            except (drgn.FaultError, ValueError):
                pass
        try:
            buf = self.prog["vmcoreinfo_data"]
            size = self.prog["vmcoreinfo_size"].value_()
            return self.read(buf.value_(), size).decode("ascii", "replace")
        except (KeyError, LookupError, FaultError, drgn.FaultError):
            return None

    def release(self) -> str:
        # init_uts_ns first: read at the vmlinux's address, it shows whether
        # the vmlinux matches the memory (drgn's UTS_RELEASE comes from the
        # dump's VMCOREINFO and would always agree with it).
        uts = self.symbol("init_uts_ns")
        off = self.offsetof("struct uts_namespace", "name.release")
        if uts is not None and off is not None:
            raw = self.read_cstring(uts + off, 65)
        else:
            try:
                raw = self.prog["UTS_RELEASE"].string_()
            except (LookupError, ValueError, drgn.FaultError):
                raise TargetError("cannot find the kernel release (no init_uts_ns)") from None
        return raw.decode("ascii", "replace")

    def vmlinux_release(self) -> Optional[str]:
        if not self.vmlinux_path:
            return None
        return vmlinux_identity(self.vmlinux_path)[0]

    def symbolize(self, address: int) -> Optional[str]:
        try:
            sym = self.prog.symbol(address)
        except LookupError:
            return None
        return "%s+%#x" % (sym.name, address - sym.address)


def _has_vmlinux(prog: drgn.Program) -> bool:
    try:
        prog.type("struct page")
        return True
    except LookupError:
        return False


def _mismatch_message(prog: drgn.Program, vmlinux: str) -> str:
    """Why drgn ignored ``vmlinux``: the dump's and the file's kernels."""
    dump_release = dump_id = None
    try:
        info = bytes(prog["VMCOREINFO"].string_()).decode("ascii", "replace")
        for line in info.splitlines():
            key, _, value = line.partition("=")
            if key == "OSRELEASE":
                dump_release = value
            elif key == "BUILD-ID":
                dump_id = value
    except (LookupError, ValueError, drgn.FaultError):
        pass
    release, build_id = vmlinux_identity(vmlinux)
    if release is None and build_id is None:
        return "%s is not a vmlinux with debug info (dump: Linux %s)" % (vmlinux, dump_release or "unknown")
    text = "%s does not match the dump: the dump is Linux %s" % (vmlinux, dump_release or "unknown")
    if release == dump_release and dump_id:
        text += " build %s, the vmlinux is build %s" % (dump_id[:12], (build_id or "unknown")[:12])
    else:
        text += ", the vmlinux is Linux %s" % (release or "unknown")
    return text + " (load the vmlinux of the dumped kernel)"


def _elf_truncation(path: str) -> Optional[Tuple[int, int]]:
    """(file size, size needed) when ``path`` is an ELF core shorter than
    its program headers say; None for a complete or non-ELF file."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:
                return None
            phoff, = struct.unpack_from("<Q", head, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
            f.seek(0, 2)
            size = f.tell()
    except (OSError, struct.error):
        return None
    need = 0
    for i in range(len(table) // phentsize if phentsize >= 56 else 0):
        _type, _flags, off, _va, _pa, filesz = struct.unpack_from("<IIQQQQ", table, i * phentsize)
        need = max(need, off + filesz)
    return (size, need) if need > size else None


def _kdump_truncation(path: str) -> Optional[Tuple[int, int]]:
    """(file size, size needed) when ``path`` is a kdump-compressed dump
    (makedumpfile, diskdump_mod.h) shorter than its last page descriptor
    says; None for a complete or other file."""
    try:
        with open(path, "rb") as f:
            head = f.read(448)
            if len(head) < 448 or head[:8] not in (b"KDUMP   ", b"DISKDUMP"):
                return None
            block_size, sub_hdr_size, bitmap_blocks = struct.unpack_from("<iiI", head, 428)
            if block_size <= 0 or sub_hdr_size < 0:
                return None
            f.seek(0, 2)
            size = f.tell()
            # the second half of the bitmap marks the pages with a descriptor
            f.seek((1 + sub_hdr_size) * block_size + bitmap_blocks * block_size // 2)
            bitmap2 = f.read(bitmap_blocks * block_size // 2)
            count = sum(bin(b).count("1") for b in bitmap2)
            desc = (1 + sub_hdr_size + bitmap_blocks) * block_size
            if count == 0:
                return None
            table_end = desc + count * 24
            if table_end > size:
                return (size, table_end)
            # Page data follows the table in pfn order, but zero pages all
            # share the first data block: walk back from the last descriptor
            # to the first one past it, the end of the data.
            need = 0
            end = count
            while end > 0 and need <= table_end + block_size:
                start = max(0, end - 4096)
                f.seek(desc + start * 24)
                raw = f.read((end - start) * 24)
                for offset, length, _flags, _pf in struct.iter_unpack("<qIIQ", raw):
                    need = max(need, offset + length)
                end = start
    except (OSError, struct.error, ValueError):
        return None
    return (size, need) if need > size else None
