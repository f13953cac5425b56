"""The kernel model: what pagewho learns once about the kernel in a target.

Every constant is resolved in one order (../DESIGN.md §3):

1. the vmlinux's own debug info (struct layouts, enumerators such as
   ``enum pageflags`` and ``enum pagetype``);
2. VMCOREINFO numbers (``NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)`` ...);
3. a table keyed by kernel version, each row citing where it comes from
   (see :mod:`pagewho.versions`).

A :class:`Kernel` is cached on its target (:func:`kernel_of`), so a front
end that keeps one target per dump never learns the same dump twice and
never serves one dump's model for another.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, Optional, Tuple, TypeVar

from .target import FaultError, Target, TargetError

T = TypeVar("T")

# x86-64: arch/x86/include/asm/page_64_types.h
START_KERNEL_MAP = 0xFFFFFFFF80000000


def parse_release(release: str) -> Tuple[int, int, int]:
    """(major, minor, patch) of a release such as "6.1.0-56-cloud-amd64".

    The Debian ABI number ("-56") is not the patch level; the patch level is
    only known from the package version, so it is 0 here unless the release
    carries it ("6.12.38+deb13-cloud-amd64").
    """
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    if not m:
        return (0, 0, 0)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


def parse_vmcoreinfo(text: Optional[str]) -> Dict[str, str]:
    """VMCOREINFO "KEY=VALUE" lines as a dict (keys like "NUMBER(PG_lru)")."""
    out: Dict[str, str] = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


_RELEASE = re.compile(r"\d+\.\d+[0-9A-Za-z.+_~-]*$")


def _banner_release(target: Target) -> Optional[str]:
    """The release in ``linux_banner`` ("Linux version R ...") at the
    vmlinux's address; "" when what is there is not a banner (the symbols
    are wrong), None when the vmlinux has no linux_banner."""
    addr = target.symbol("linux_banner")
    if addr is None:
        return None
    try:
        text = target.read_cstring(addr, 128)
    except FaultError as e:
        # unreadable is not "another kernel": say what failed
        raise TargetError("cannot read linux_banner to check the vmlinux: %s" % e) from None
    m = re.match(rb"Linux version (\S+)", text)
    return m.group(1).decode("ascii", "replace") if m else ""


def check_vmlinux(target: Target, info: Dict[str, str]) -> str:
    """The kernel release, after checking that the vmlinux (the symbols and
    types the target uses) belongs to the kernel in memory.

    The dump says which kernel it holds in VMCOREINFO (``OSRELEASE``, and
    the run-time address of ``init_uts_ns``) or, without VMCOREINFO, in
    ``linux_banner``; the release read at the vmlinux's ``init_uts_ns``
    must be the same, or every address pagewho uses is wrong.  Raises
    :class:`TargetError` showing both releases.
    """
    from .text import clean

    fault = None
    try:
        mine: Optional[str] = target.release()
    except FaultError as e:
        mine, fault = None, e
    except (TargetError, LookupError, ValueError, UnicodeError):
        mine = None
    dump = info.get("OSRELEASE")
    source = "VMCOREINFO"
    if dump is None:
        dump = _banner_release(target)
        source = "linux_banner"
    # the run-time address of init_uts_ns, when VMCOREINFO gives it
    same_place = True
    sym = info.get("SYMBOL(init_uts_ns)")
    if sym is not None:
        addr = target.symbol("init_uts_ns")
        try:
            same_place = addr is None or int(sym, 16) == addr
        except ValueError:
            pass
    if mine and same_place and (mine == dump or dump is None):
        return mine  # (nothing to compare with when dump is None)
    if fault is not None and same_place:
        # the right place, but not in the dump (truncated, filtered): say so
        raise TargetError("cannot read the kernel release (init_uts_ns): %s" % fault)
    vmlinux = target.vmlinux_release()
    if vmlinux is None:
        if mine is not None and _RELEASE.match(mine) and mine != dump:
            vmlinux = mine
        else:
            vmlinux = "another kernel (its init_uts_ns reads %s)" % (
                "nothing" if mine is None else repr(clean(mine[:40])))
    elif vmlinux == dump:
        vmlinux += " of another build"
    raise TargetError("the vmlinux does not match the dump: the dump is Linux %s (%s), the vmlinux is %s "
                      "(load the vmlinux of the dumped kernel)"
                      % (clean(dump or "unknown"), source, clean(vmlinux)))


class Kernel:
    """Layout, constants and address translation of one kernel image.

    Lookups that the rest of pagewho cannot do without raise
    :class:`TargetError` naming what is missing; optional ones return None.
    """

    def __init__(self, target: Target) -> None:
        self.target = target
        self.vmcoreinfo = parse_vmcoreinfo(target.vmcoreinfo())
        self.release = check_vmlinux(target, self.vmcoreinfo)
        self.version = parse_release(self.release)
        self._off: Dict[Tuple[str, str], Optional[int]] = {}
        self._size: Dict[str, Optional[int]] = {}
        self._sym: Dict[str, Optional[int]] = {}
        #: free-form caches for owner naming (slab caches, vmap areas, ...)
        self.memo: Dict[str, object] = {}

        self.page_size = self.number("PAGESIZE") or int(self.vmcoreinfo.get("PAGESIZE", "4096"))
        self.page_shift = self.page_size.bit_length() - 1
        self.struct_page_size = self.sizeof("struct page")
        # the KASLR-randomised bases (arch/x86/mm/kaslr.c), or their defaults
        self.page_offset = self.var("page_offset_base", 0xFFFF888000000000)
        self.vmemmap = self.var("vmemmap_base", 0xFFFFEA0000000000)
        self.vmalloc_start = self.var("vmalloc_base", 0xFFFFC90000000000)
        phys_base = self.number("phys_base")
        self.phys_base = self.var("phys_base", 0) if phys_base is None else phys_base
        self.max_pfn = self.var("max_pfn", 0)

    # -- debug-info lookups, memoised -------------------------------------

    def sizeof(self, type_name: str) -> int:
        size = self.sizeof_opt(type_name)
        if size is None:
            raise TargetError("the kernel's debug info has no %s (wrong vmlinux?)" % type_name)
        return size

    def sizeof_opt(self, type_name: str) -> Optional[int]:
        if type_name not in self._size:
            self._size[type_name] = self.target.sizeof(type_name)
        return self._size[type_name]

    def off(self, type_name: str, member: str) -> int:
        value = self.off_opt(type_name, member)
        if value is None:
            raise TargetError("the kernel's debug info has no %s.%s" % (type_name, member))
        return value

    def off_opt(self, type_name: str, member: str) -> Optional[int]:
        key = (type_name, member)
        if key not in self._off:
            self._off[key] = self.target.offsetof(type_name, member)
        return self._off[key]

    def has_member(self, type_name: str, member: str) -> bool:
        return self.off_opt(type_name, member) is not None

    def member_size(self, type_name: str, member: str) -> Optional[int]:
        return self.target.member_size(type_name, member)

    def sym(self, name: str) -> int:
        addr = self.sym_opt(name)
        if addr is None:
            raise TargetError("the kernel has no symbol %s" % name)
        return addr

    def sym_opt(self, name: str) -> Optional[int]:
        if name not in self._sym:
            self._sym[name] = self.target.symbol(name)
        return self._sym[name]

    def once(self, key: str, build: Callable[[Kernel], T]) -> T:
        """``build(self)``, computed the first time ``key`` is asked for and
        kept in :attr:`memo` (per-kernel indexes: memmap, tasks, ...)."""
        try:
            return self.memo[key]  # type: ignore[return-value]
        except KeyError:
            value = self.memo[key] = build(self)
            return value

    def enum(self, name: str) -> Optional[int]:
        return self.target.enum_value(name)

    def enumerators(self, enum_name: str) -> Dict[str, int]:
        return self.target.enumerators(enum_name) or {}

    def number(self, key: str) -> Optional[int]:
        """VMCOREINFO ``NUMBER(key)`` as an int, or None."""
        raw = self.vmcoreinfo.get("NUMBER(%s)" % key)
        if raw is None:
            return None
        try:
            return int(raw, 0)
        except ValueError:
            return None

    # -- memory -----------------------------------------------------------

    def read(self, address: int, size: int) -> bytes:
        return self.target.read(address, size)

    def u64(self, address: int) -> int:
        return self.target.read_u64(address)

    def u32(self, address: int) -> int:
        return self.target.read_u32(address)

    def cstring(self, address: int, limit: int = 256) -> bytes:
        return self.target.read_cstring(address, limit)

    def var(self, symbol: str, default: int, size: int = 8) -> int:
        """The value of the unsigned global variable ``symbol`` (``size``
        bytes), or ``default`` when the kernel lacks it or the dump does
        not hold it."""
        addr = self.sym_opt(symbol)
        if addr is None:
            return default
        try:
            return int.from_bytes(self.read(addr, size), "little")
        except FaultError:
            return default

    # -- address translation (x86-64) -------------------------------------

    def pfn_to_page(self, pfn: int) -> int:
        """Address of the struct page of ``pfn`` (CONFIG_SPARSEMEM_VMEMMAP)."""
        return self.vmemmap + pfn * self.struct_page_size

    def page_to_pfn(self, page: int) -> Optional[int]:
        """pfn of a struct page address, or None if it is not one."""
        delta = page - self.vmemmap
        if delta < 0 or delta % self.struct_page_size:
            return None
        pfn = delta // self.struct_page_size
        # beyond the vmemmap area (MAX_PHYSMEM_BITS of pfns): the kernel
        # image, modules, fixmap -- not a struct page at all
        bits = self.number("MAX_PHYSMEM_BITS") or (52 if self.number("pgtable_l5_enabled") else 46)
        if pfn >> (bits - self.page_shift):
            return None
        return pfn

    def pfn_to_virt(self, pfn: int) -> int:
        """Direct-map address of ``pfn``."""
        return self.page_offset + (pfn << self.page_shift)

    def virt_to_pfn(self, address: int) -> Optional[int]:
        """pfn of a direct-map or kernel-image address, without a page-table
        walk; None for other addresses (use :mod:`pagewho.pgtable`)."""
        if address >= START_KERNEL_MAP:
            # only the kernel image is mapped linearly there (__pa_symbol);
            # modules and fixmaps need the page tables
            text, end = self.sym_opt("_text"), self.sym_opt("_end")
            if text is None or end is None or not text <= address < end:
                return None
            return (address - START_KERNEL_MAP + self.phys_base) >> self.page_shift
        # The direct map is at most 64 TiB, and ends where KASLR put the
        # vmalloc area when that comes sooner (arch/x86/mm/kaslr.c).
        end = self.page_offset + (1 << 46)
        if self.page_offset < self.vmalloc_start < end:
            end = self.vmalloc_start
        if self.page_offset <= address < end:
            return (address - self.page_offset) >> self.page_shift
        return None

    def symbolize(self, address: int) -> Optional[str]:
        return self.target.symbolize(address)


def kernel_of(target: Target) -> Kernel:
    """The :class:`Kernel` of ``target``, learned once and kept on it."""
    k = getattr(target, "_pagewho_kernel", None)
    if k is None:
        k = Kernel(target)
        target._pagewho_kernel = k  # type: ignore[attr-defined]
    return k
