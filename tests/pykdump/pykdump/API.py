"""Stand-in for ``pykdump.API``, backed by drgn on a real dump.

Exactly the calls pagewho's crash front end uses, with the signatures and
return conventions of PyKdump (wrapcrash.py / highlevel.py for the Python
parts, Extension/functions.c for the C parts; summarised in
shared/PYKDUMP.md):

=====================  ===============================================
``readmem(a, n)``      bytes; ``crash.error`` on a failed read,
                       ``IndexError`` for address 0
``sym2addr(name)``     address; 0 when the symbol is missing
``addr2sym(a, loose)`` name when ``a`` is exactly a symbol, else None;
                       with ``loose`` true: (name, offset) or (None, None)
``struct_size(t)``     int; -1 when unknown (any type, not only structs)
``member_offset(s,m)`` int; -1 when absent; dotted paths through named
                       struct/union members; anonymous members are
                       flattened into their parent (Generic.SUInfo)
``member_size(s, m)``  int; -1 when ``m`` is absent (no dotted paths:
                       ``getStructInfo(s)[m]``); an unknown struct raises
``enumerator_value(n)`` int; None when absent
``EnumInfo(t)``        dict of enumerators; TypeError when ``t`` is not an
                       enum ("enum X", or an enumerator naming an
                       anonymous enum)
``sys_info``           ``.DUMPFILE``, ``.RELEASE`` (from crash's ``sys``)
                       and ``.kernel`` (KernelRev of "X.Y.Z")
=====================  ===============================================

Any other attribute is recorded as forbidden and raises AttributeError.
"""

from __future__ import annotations

import re
import sys
import types
from typing import Dict, Optional, Tuple

import crash
import drgn
import standin

KVADDR = 1  # crash's memory type for kernel virtual addresses (defs.h)


def _prog() -> drgn.Program:
    if standin.STATE.prog is None:
        raise crash.error("no dump is open (standin.open_dump)")
    return standin.STATE.prog


# -- memory -----------------------------------------------------------------

def readmem(addr: int, size: int, mtype: int = KVADDR) -> bytes:
    if not addr:
        raise IndexError("readPtr NULL pointer")
    standin.STATE.reads += 1
    try:
        # crash's readmem(addr, KVADDR, buf, size, "Python", RETURN_ON_ERROR|QUIET)
        return _prog().read(addr & 0xFFFFFFFFFFFFFFFF, size)
    except (drgn.FaultError, ValueError, OverflowError):
        raise crash.error("readmem error at addr 0x%x, reading %d bytes" % (addr, size)) from None


# -- symbols ----------------------------------------------------------------

def sym2addr(name: str) -> int:
    if not isinstance(name, str):
        raise crash.error("invalid parameter type")
    try:
        return _prog().symbol(name).address
    except LookupError:
        return 0


def addr2sym(addr: int, loose_match: int = 0):
    try:
        sym = _prog().symbol(addr)
    except LookupError:
        return (None, None) if loose_match else None
    offset = addr - sym.address
    if loose_match:
        return (sym.name, offset)
    return sym.name if offset == 0 else None


# -- types ------------------------------------------------------------------

def _type(name: str) -> drgn.Type:
    return _prog().type(name)


def _strip(t: drgn.Type) -> drgn.Type:
    while t.kind == drgn.TypeKind.TYPEDEF:
        t = t.type
    return t


_SU = (drgn.TypeKind.STRUCT, drgn.TypeKind.UNION)


def _suinfo(t: drgn.Type) -> Dict[str, Tuple[int, drgn.Type]]:
    """Generic.SUInfo: named members; anonymous structs/unions flattened into
    the parent with their offsets; a later duplicate name wins."""
    out: Dict[str, Tuple[int, drgn.Type]] = {}
    t = _strip(t)
    if t.kind not in _SU:
        raise TypeError("not a struct/union")

    def add(members, base: int) -> None:
        for m in members:
            off = base + (m.bit_offset or 0) // 8
            if m.name:
                out[m.name] = (off, m.type)
            else:
                mt = _strip(m.type)
                if mt.kind not in _SU:
                    raise TypeError("field without a name")
                add(mt.members, off)

    add(t.members, 0)
    return out


def _getstructinfo(sname: str) -> Dict[str, Tuple[int, drgn.Type]]:
    cache = standin.STATE.type_cache
    key = ("SU", sname)
    if key not in cache:
        try:
            cache[key] = _suinfo(_type(sname))
        except (LookupError, ValueError, SyntaxError) as e:
            cache[key] = TypeError("cannot find struct <%s>: %s" % (sname, e))
    v = cache[key]
    if isinstance(v, Exception):
        raise v
    return v


def struct_size(sname: str) -> int:
    try:
        return drgn.sizeof(_type(sname))
    except Exception:  # wrapcrash: bare except -> -1
        return -1


def member_offset(sname: str, fname: str) -> int:
    try:
        si = _getstructinfo(sname)
        chain = fname.split(".")
        offset = 0
        for i, f in enumerate(chain):
            off, t = si[f]
            offset += off
            if i == len(chain) - 1:
                break
            if _strip(t).kind not in _SU:
                return -1
            si = _suinfo(t)
        return offset
    except Exception:  # wrapcrash: bare except -> -1
        return -1


def member_size(sname: str, fname: str) -> int:
    si = _getstructinfo(sname)  # an unknown struct raises, as in PyKdump
    try:
        _, t = si[fname]
    except KeyError:
        return -1
    try:
        return drgn.sizeof(t)
    except TypeError:
        return -1


def enumerator_value(name: str) -> Optional[int]:
    try:
        obj = _prog().constant(name)
    except LookupError:
        return None
    return obj.value_()


class EnumInfo(dict):
    """Generic.EnumInfo: a dict of the enumerators of ``stype``."""

    def __init__(self, stype: str) -> None:
        super().__init__()
        object.__setattr__(self, "stype", stype)
        try:
            if "enum " not in stype:
                # an anonymous enum, named by one of its enumerators
                t = _prog().constant(stype).type_
            else:
                t = _type(stype)
        except (LookupError, ValueError, SyntaxError):
            raise TypeError("cannot find enum <%s>" % stype) from None
        t = _strip(t)
        if t.kind != drgn.TypeKind.ENUM or t.enumerators is None:
            raise TypeError("%s is not a enum" % stype)
        for e in t.enumerators:
            self[e.name] = e.value


# -- sys_info -----------------------------------------------------------------

class KernelRev(str):
    """Generic.KernelRev: "X.Y.Z" comparable as a version."""


class _SysInfo:
    """``sys_info``: crash's ``sys`` output split at the first colon."""

    ALLOWED = frozenset({"DUMPFILE", "RELEASE", "kernel"})

    def __getattr__(self, name: str):
        if name not in _SysInfo.ALLOWED:
            standin.STATE.forbidden.append("sys_info." + name)
            raise AttributeError(name)
        standin.STATE.used.add("sys_info." + name)
        st = standin.STATE
        if name == "DUMPFILE":
            # crash's "sys" marks a filtered (makedumpfile) dump
            return st.vmcore + ("  [PARTIAL DUMP]" if st.partial else "")
        release = st.release
        if name == "RELEASE":
            return release
        m = re.match(r"\d+\.\d+\.\d+", release)
        return KernelRev(m.group(0) if m else release)


sys_info = _SysInfo()

ALLOWED = frozenset({
    "readmem", "sym2addr", "addr2sym", "struct_size", "member_offset", "member_size",
    "enumerator_value", "EnumInfo", "sys_info",
})


class _Guarded(types.ModuleType):
    def __getattribute__(self, name: str):
        if name.startswith("_") or name in ("ALLOWED", "KVADDR"):
            return super().__getattribute__(name)
        if name not in super().__getattribute__("ALLOWED"):
            standin.STATE.forbidden.append("pykdump.API." + name)
            raise AttributeError(
                "stand-in pykdump.API has no %r (not in the documented set)" % name)
        standin.STATE.used.add("pykdump.API." + name)
        return super().__getattribute__(name)


__all__ = sorted(ALLOWED)
sys.modules[__name__].__class__ = _Guarded
