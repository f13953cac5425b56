"""Walking the x86-64 kernel page tables (arch/x86/include/asm/pgtable_types.h).

Used to turn vmalloc and module addresses into pfns.  Page-table pages are
read through the direct map, so only virtual reads are needed.
"""

from __future__ import annotations

from typing import Optional

from .kernel import Kernel
from .target import FaultError

_PRESENT = 1 << 0
_PSE = 1 << 7  # a huge page at the PUD or PMD level
_ADDR_MASK = 0x000FFFFFFFFFF000  # bits 12..51 of an entry


def _levels(k: Kernel) -> int:
    """4, or 5 when the kernel runs with 5-level paging (pgtable_l5_enabled)."""
    return 5 if k.number("pgtable_l5_enabled") else 4


def kernel_virt_to_phys(k: Kernel, vaddr: int) -> Optional[int]:
    """The physical address ``vaddr`` maps to in the kernel page tables
    (init_top_pgt), or None when it is not mapped."""
    top = k.sym_opt("init_top_pgt")
    if top is None:
        top = k.sym("swapper_pg_dir")
    top_pfn = k.virt_to_pfn(top)
    if top_pfn is None:
        return None
    table = top_pfn << k.page_shift
    levels = _levels(k)
    shift = 12 + 9 * (levels - 1)
    try:
        for level in range(levels, 0, -1):
            index = (vaddr >> shift) & 0x1FF
            entry = k.u64(k.page_offset + table + index * 8)
            if not entry & _PRESENT:
                return None
            if level in (2, 3) and entry & _PSE:
                size = 1 << shift
                return (entry & _ADDR_MASK & ~(size - 1)) | (vaddr & (size - 1))
            table = entry & _ADDR_MASK
            shift -= 9
    except FaultError:
        return None
    return table | (vaddr & 0xFFF)
