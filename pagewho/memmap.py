"""The memmap: which pfns have a struct page, and reading them in bulk.

Validity follows SPARSEMEM (include/linux/mmzone.h): ``mem_section`` is an
array of roots (CONFIG_SPARSEMEM_EXTREME, every x86-64 distribution kernel),
each root a page of ``struct mem_section``; a section is valid when its
``section_mem_map`` has SECTION_HAS_MEM_MAP.  Within a valid section, the
memmap is read through the vmemmap (CONFIG_SPARSEMEM_VMEMMAP), whose
address for pfn N is ``vmemmap_base + N * sizeof(struct page)``.
"""

from __future__ import annotations

import struct
from typing import Dict, Iterator, List, Optional, Tuple

from .kernel import Kernel
from .target import FaultError, TargetError

# include/linux/mmzone.h: the low bits of section_mem_map
SECTION_MARKED_PRESENT = 1 << 0
SECTION_HAS_MEM_MAP = 1 << 1


class MemMap:
    """Valid pfn ranges of a kernel, and struct page reads."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.section_size_bits = k.number("SECTION_SIZE_BITS") or 27
        self.pfn_section_shift = self.section_size_bits - k.page_shift
        self.pages_per_section = 1 << self.pfn_section_shift
        #: section number -> section_mem_map flags, for present sections
        self.sections: Dict[int, int] = self._read_sections()
        if not self.sections:
            raise TargetError("no memory sections found (mem_section unreadable or empty)")
        self.end_pfn = (max(self.sections) + 1) << self.pfn_section_shift

    def _read_sections(self) -> Dict[int, int]:
        k = self.k
        ms_size = k.sizeof("struct mem_section")
        map_off = k.off("struct mem_section", "section_mem_map")
        per_root = k.page_size // ms_size  # SECTIONS_PER_ROOT, EXTREME
        max_physmem_bits = k.number("MAX_PHYSMEM_BITS") or 46
        nr_sections = 1 << (max_physmem_bits - self.section_size_bits)
        nr_roots = -(-nr_sections // per_root)
        length = k.vmcoreinfo.get("LENGTH(mem_section)")
        if length:
            nr_roots = min(nr_roots, int(length, 0))
        sym = k.sym("mem_section")
        # With CONFIG_SPARSEMEM_EXTREME, mem_section is a pointer to the roots
        # array (allocated at boot since v4.15, commit 83e3c48729d9).
        roots_addr = k.u64(sym)
        raw = k.read(roots_addr, nr_roots * 8)
        sections: Dict[int, int] = {}
        for root_nr, root in enumerate(struct.unpack("<%dQ" % nr_roots, raw)):
            if not root:
                continue
            try:
                data = k.read(root, per_root * ms_size)
            except FaultError:
                continue
            for i in range(per_root):
                value = struct.unpack_from("<Q", data, i * ms_size + map_off)[0]
                if value & SECTION_HAS_MEM_MAP:
                    sections[root_nr * per_root + i] = value
        return sections

    def section_of(self, pfn: int) -> int:
        return pfn >> self.pfn_section_shift

    def valid(self, pfn: int) -> bool:
        """True when ``pfn`` has a struct page (its section has a memmap)."""
        return pfn >= 0 and (pfn >> self.pfn_section_shift) in self.sections

    def why_invalid(self, pfn: int) -> str:
        if pfn < 0:
            return "pfn %d is negative" % pfn
        if pfn >= self.end_pfn:
            return "pfn %#x is beyond the last memory section (max pfn %#x)" % (pfn, self.end_pfn - 1)
        return "pfn %#x is in a memory hole (section %d has no memmap)" % (
            pfn,
            pfn >> self.pfn_section_shift,
        )

    def ranges(self, start: int = 0, end: Optional[int] = None) -> Iterator[Tuple[int, int]]:
        """Maximal runs [a, b) of valid pfns within [start, end)."""
        if end is None:
            end = self.end_pfn
        run: Optional[List[int]] = None
        for nr in sorted(self.sections):
            a = max(nr << self.pfn_section_shift, start)
            b = min((nr + 1) << self.pfn_section_shift, end)
            if a >= b:
                continue
            if run and run[1] == a:
                run[1] = b
            else:
                if run:
                    yield run[0], run[1]
                run = [a, b]
        if run:
            yield run[0], run[1]

    def read_pages(self, pfn: int, count: int) -> bytes:
        """The raw struct pages of pfns [pfn, pfn + count), in one read."""
        k = self.k
        return k.read(k.pfn_to_page(pfn), count * k.struct_page_size)


def memmap_of(k: Kernel) -> MemMap:
    """The :class:`MemMap` of a kernel, built once."""
    return k.once("memmap", MemMap)
