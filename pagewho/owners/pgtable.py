"""Page-table pages: which address space they translate for.

A page-table page's struct page says little about its owner (x86 pgd pages
carry ``pt_mm``; the other levels carry only the split lock), so the owners
come from walking the tables themselves, once per kernel: every live mm's
user half (``mm->pgd``, indices below 256 of the top level) and the kernel's
own tables (``init_top_pgt``, the tables of ``init_mm``).  Only the upper
levels are read -- a PTE table's pfn is in its PMD entry -- so the walk
costs a few reads per process.  The result, pfn -> (mm or kernel, level,
virtual range), is cached in ``k.memo``.

x86-64 specifics (arch/x86/include/asm/pgtable_types.h, pgalloc.h):
4 levels, or 5 when VMCOREINFO says ``pgtable_l5_enabled``; ``_PAGE_PSE``
ends the walk at the PUD and PMD levels (1 GiB / 2 MiB pages).  With
CONFIG_PAGE_TABLE_ISOLATION the pgd is an order-1 block whose second page
is the user-mode copy when PTI is on at run time (X86_FEATURE_PTI), and
``init_top_pgt`` is followed by its own user copy.  A PMD-mapped THP keeps
a pre-allocated PTE table "deposited" on the PMD table's ``pmd_huge_pte``
(mm/pgtable-generic.c);
those are found from the PMD tables that hold huge entries.

Checked against the sample dumps of 5.10, 6.1, 6.12 and 7.x.
"""

from __future__ import annotations

import struct
from typing import Dict, List, Optional, Set, Tuple

from ..kernel import Kernel
from ..memmap import memmap_of
from ..owner import Owner, register
from ..page import Page
from ..target import FaultError
from .tasks import is_kernel_ptr, list_nodes, proc_dicts, procs_text, pt_levels, tasks_of

_PRESENT = 1 << 0
_PSE = 1 << 7
_ADDR_MASK = 0x000FFFFFFFFFF000
_ENTRIES = struct.Struct("<512Q")
#: a corrupt dump must not make the walk read forever
MAX_TABLES = 1 << 20
MAX_DEPOSITS = 1 << 12

#: owner key of the kernel's own tables
KERNEL = 0


#: arch/x86/include/asm/cpufeatures.h: X86_FEATURE_PTI is ( 7*32+11) from
#: v4.15 ("x86/pti: Add the pti= cmdline option and documentation") on
X86_FEATURE_PTI = 7 * 32 + 11


def pti_enabled(k: Kernel) -> bool:
    """Page table isolation in force (boot_cpu_data has X86_FEATURE_PTI).

    Only then is the pgd's second page a user-mode copy: kernels up to ~v6.x
    allocate the order-1 pgd whenever PTI is built in, but the second page
    stays unused when PTI is off at run time, and later kernels allocate a
    single page then (pgd_allocation_order()), so the page after a pgd may
    be anything."""
    addr = k.sym_opt("boot_cpu_data")
    off = k.off_opt("struct cpuinfo_x86", "x86_capability")
    if addr is None or off is None:
        return False
    try:
        word = k.u32(addr + off + 4 * (X86_FEATURE_PTI // 32))
    except FaultError:
        return False
    return bool(word >> (X86_FEATURE_PTI % 32) & 1)


def level_name(levels: int, level: int) -> str:
    if level == levels:
        return "pgd"
    return {4: "p4d", 3: "pud", 2: "pmd", 1: "pte"}[level]


def _canon(v: int, bits: int) -> int:
    """Sign-extend a ``bits``-bit virtual address (upper-half addresses)."""
    return v | ((1 << 64) - (1 << bits)) if v >> (bits - 1) & 1 else v


class TableMap:
    """pfn -> [(owner mm or KERNEL, level, first vaddr, last vaddr, note)]."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.levels = pt_levels(k)
        self.bits = 12 + 9 * self.levels
        self.owners: Dict[int, List[Tuple[int, int, int, int, str]]] = {}
        self.count = 0
        self.truncated = False
        self.pti = pti_enabled(k)
        P = "struct page"
        self.o_huge = k.off_opt(P, "pmd_huge_pte")
        if self.o_huge is None:
            self.o_huge = k.off_opt("struct ptdesc", "pmd_huge_pte")
        self.o_lru = k.off(P, "lru")
        self.memmap = memmap_of(k)
        self.walked: Set[int] = set()
        self._build()

    def _add(self, pfn: int, owner: int, level: int, base: int, span: int, note: str = "") -> None:
        self.owners.setdefault(pfn, []).append(
            (owner, level, _canon(base, self.bits), _canon(base + span - 1, self.bits), note))
        self.count += 1

    def _read(self, table_pfn: int) -> Optional[Tuple[int, ...]]:
        try:
            return _ENTRIES.unpack(self.k.read(self.k.pfn_to_virt(table_pfn), 4096))
        except FaultError:
            return None

    def _walk(self, owner: int, table_pfn: int, level: int, base: int, first: int, last: int) -> None:
        """Record the tables below ``table_pfn`` (a table of ``level``)
        for indices [first, last]."""
        if self.count >= MAX_TABLES:
            self.truncated = True
            return
        entries = self._read(table_pfn)
        if entries is None:
            return
        shift = 12 + 9 * (level - 1)
        child_span = 1 << shift
        huge_here = False
        for i in range(first, last + 1):
            e = entries[i]
            if not e & _PRESENT:
                continue
            if level in (2, 3) and e & _PSE:
                huge_here = huge_here or level == 2
                continue
            child = (e & _ADDR_MASK) >> 12
            vbase = base + i * child_span
            self._add(child, owner, level - 1, vbase, child_span)
            # a table is read once, even if shared (hugetlb PMD sharing) or
            # if a corrupt entry points back up the tree
            if level - 1 > 1 and child not in self.walked and self.memmap.valid(child):
                self.walked.add(child)
                self._walk(owner, child, level - 1, vbase, 0, 511)
        if huge_here and owner != KERNEL:
            self._deposits(owner, table_pfn, base, child_span << 9)

    def _deposits(self, owner: int, pmd_pfn: int, base: int, span: int) -> None:
        """PTE tables deposited for PMD-mapped THPs of this PMD table."""
        if self.o_huge is None:
            return
        k = self.k
        try:
            first = k.u64(k.pfn_to_page(pmd_pfn) + self.o_huge)
            if not is_kernel_ptr(first):
                return
            pages = [first]
            for node in list_nodes(k, first + self.o_lru, MAX_DEPOSITS):
                pages.append(node - self.o_lru)
        except FaultError:
            return
        for pg in pages:
            pfn = k.page_to_pfn(pg)
            if pfn is not None:
                self._add(pfn, owner, 1, base, span, "deposited for a PMD-mapped THP")

    def _build(self) -> None:
        k = self.k
        top = self.levels
        top_span = 1 << (12 + 9 * top)
        o_pgd = k.off("struct mm_struct", "pgd")
        self.special = special_mms(k)
        for mm in list(tasks_of(k).by_mm) + [mm for mm in self.special if mm not in tasks_of(k).by_mm]:
            try:
                pgd = k.u64(mm + o_pgd)
            except FaultError:
                continue
            pfn = k.virt_to_pfn(pgd)
            if pfn is None:
                continue
            self._add(pfn, mm, top, 0, top_span)
            if self.pti:
                self._add(pfn + 1, mm, top, 0, top_span, "user-mode copy (page table isolation)")
            self._walk(mm, pfn, top, 0, 0, 255)
        kpgd = k.sym_opt("init_top_pgt")
        if kpgd is None:
            kpgd = k.sym_opt("swapper_pg_dir")
        if kpgd is not None:
            pfn = k.virt_to_pfn(kpgd)
            if pfn is not None:
                self._add(pfn, KERNEL, top, 0, top_span)
                self._walk(KERNEL, pfn, top, 0, 0, 511)
                if self.pti:
                    self._add(pfn + 1, KERNEL, top, 0, top_span, "user-mode copy (page table isolation)")
                    self._walk(KERNEL, pfn + 1, top, 0, 256, 511)

    def lookup(self, pfn: int) -> List[Tuple[int, int, int, int, str]]:
        return self.owners.get(pfn, [])


#: mm_structs that belong to no task: (symbol, is a pointer to the mm, what it is)
SPECIAL_MMS = (
    ("poking_mm", True, "text_poke's temporary mm (arch/x86/mm/init.c)"),
    ("text_poke_mm", True, "text_poke's temporary mm (arch/x86/mm/init.c)"),
    ("efi_mm", False, "EFI runtime services mm"),
)


def special_mms(k: Kernel) -> Dict[int, str]:
    """mm address -> description of the kernel's task-less mms."""
    out: Dict[int, str] = {}
    for name, is_ptr, what in SPECIAL_MMS:
        addr = k.sym_opt(name)
        if addr is None:
            continue
        try:
            mm = k.u64(addr) if is_ptr else addr
        except FaultError:
            continue
        if is_kernel_ptr(mm):
            out[mm] = "%s: %s" % (name, what)
    return out


def table_map(k: Kernel) -> TableMap:
    """The :class:`TableMap` of a kernel, built once."""
    return k.once("user.pgtables", TableMap)


def pgtable_owner(k: Kernel, pfn: int) -> Optional[Dict[str, object]]:
    """What ``pfn`` is a page table of: {"kernel", "mm", "level", "vaddr_start",
    "vaddr_end", "processes", ...}, or None when no walked table leads to it."""
    tm = table_map(k)
    found = tm.lookup(pfn)
    if not found:
        return None
    owner, level, start, end, note = found[0]
    out: Dict[str, object] = {
        "kernel": owner == KERNEL,
        "mm": None if owner == KERNEL else owner,
        "level": level_name(tm.levels, level),
        "vaddr_start": start,
        "vaddr_end": end,
    }
    if note:
        out["note"] = note
    if owner != KERNEL:
        out["processes"] = proc_dicts(k, owner)
        if owner in tm.special:
            out["special_mm"] = tm.special[owner]
    if len(found) > 1:
        out["also"] = [{"mm": None if o == KERNEL else o, "level": level_name(tm.levels, lv)}
                       for o, lv, _, _, _ in found[1:]]
    return out


def _pt_mm(k: Kernel, page: Page) -> Optional[int]:
    """x86 pgd pages record their mm in page->pt_mm (ptdesc->pt_mm)."""
    off = k.off_opt("struct page", "pt_mm")
    if off is None:
        off = k.off_opt("struct ptdesc", "pt_mm")
    if off is None:
        return None
    mm = k.u64(page.address + off)
    return mm if is_kernel_ptr(mm) else None


def name_table_page(k: Kernel, page: Page, head: Page, owner: Owner) -> bool:
    """For pages the struct page leaves unexplained: name ``page`` as a page
    table if a walk leads to it (kernels before ~v6.14 do not mark pgd
    pages, nor most kernel tables, as PageTable).  True if it did."""
    if page.page_type is not None or page.mapping or page.is_tail:
        return False
    if pgtable_owner(k, page.pfn) is None:
        return False
    owner.kind = "pgtable"
    name_pgtable(k, page, head, owner)
    owner.detail["marked"] = False
    return True


@register("pgtable")
def name_pgtable(k: Kernel, page: Page, head: Page, owner: Owner) -> None:
    det = owner.detail
    info = pgtable_owner(k, page.pfn)
    if info is None:
        mm = _pt_mm(k, head)
        if mm is not None and mm in tasks_of(k).by_mm:
            procs = proc_dicts(k, mm)
            det.update({"kernel": False, "mm": mm, "level": "pgd", "processes": procs})
            det["summary"] = "pgd of mm %#x: %s (from page->pt_mm)" % (mm, procs_text(procs))
            return
        det["summary"] = ("not reachable from the page tables of any live task or the kernel "
                          "(an mm being torn down, or a table being freed)")
        det["kernel"] = None
        return
    det.update(info)
    rng = "%#x-%#x" % (info["vaddr_start"], info["vaddr_end"])
    if info["kernel"]:
        text = "kernel page tables (init_mm): %s table for %s" % (info["level"], rng)
    else:
        procs = info["processes"]
        who = info.get("special_mm") if not procs and info.get("special_mm") else procs_text(procs)  # type: ignore
        text = "%s table of mm %#x for %s: %s" % (info["level"], info["mm"], rng, who)
    if info.get("note"):
        text += " (%s)" % info["note"]
    det["summary"] = text
