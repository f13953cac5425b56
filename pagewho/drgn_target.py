"""The target protocol over drgn (vmcores, /proc/kcore)."""

from __future__ import annotations

from typing import Dict, Optional

import drgn

from .target import FaultError, Target, TargetError


class DrgnTarget(Target):
    """A :class:`Target` reading through a ``drgn.Program``."""

    name = "drgn"

    def __init__(self, prog: drgn.Program, live: bool = False) -> None:
        self.prog = prog
        self.live = live
        self._types: Dict[str, Optional[drgn.Type]] = {}
        self._enum_cache: Optional[Dict[str, int]] = None

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
        return cls(prog, live=vmcore is None)

    # -- protocol ---------------------------------------------------------

    def read(self, address: int, size: int) -> bytes:
        try:
            return self.prog.read(address, size)
        except drgn.FaultError as e:
            raise FaultError(address, size, str(e)) from None
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
        try:
            return self.prog["UTS_RELEASE"].string_().decode()
        except (KeyError, LookupError, ValueError):
            pass
        return self.prog["init_uts_ns"].name.release.string_().decode()

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
