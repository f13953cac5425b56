"""Constants that neither the debug info nor VMCOREINFO carries.

Each row names the kernel versions it holds for and the source it follows.
They are the last resort of the resolution order in :mod:`pagewho.kernel`.
"""

from __future__ import annotations

from typing import Dict, Tuple

Version = Tuple[int, int, int]

# page_type bits before `enum pagetype` existed (they were #defines in
# include/linux/page-flags.h, v4.18 .. v6.9).  A type is set when its bit is
# *clear* in page_type and PAGE_TYPE_BASE's bits are set.
#
# v4.18 .. v5.10: PG_buddy 0x80, PG_offline 0x100 (v5.0, "balloon" before),
#   PG_kmemcg 0x200, PG_table 0x400, PG_guard 0x800 (v5.1).
# v5.11 .. v6.8: "mm: Convert page kmemcg type to a page memcg flag" (v5.11)
#   dropped PG_kmemcg and moved PG_table to 0x200, PG_guard to 0x400;
#   "mm: Add support for unaccepted memory" (v6.5) added PG_unaccepted 0x800.
# v6.9: "mm: turn folio_test_hugetlb into a PageType" put PG_hugetlb at 0x800;
#   v6.9 also exports the hugetlb value in VMCOREINFO, which wins.
OLD_PAGE_TYPE_BASE = 0xF0000000


def old_page_type_bits(version: Version) -> Dict[str, int]:
    """The page_type bits of a kernel older than v6.10, by type name."""
    if version < (5, 11, 0):
        return {"buddy": 0x80, "offline": 0x100, "kmemcg": 0x200, "table": 0x400, "guard": 0x800}
    bits = {"buddy": 0x80, "offline": 0x100, "table": 0x200, "guard": 0x400}
    if (6, 5, 0) <= version < (6, 9, 0):
        bits["unaccepted"] = 0x800
    if version >= (6, 9, 0):
        bits["hugetlb"] = 0x800
    return bits


# include/linux/poison.h: POISON_POINTER_DELTA on x86-64 (CONFIG_ILLEGAL_POINTER_VALUE)
POISON_POINTER_DELTA = 0xDEAD000000000000
# include/net/page_pool/types.h (v6.6+; include/linux/mm.h before): PP_SIGNATURE
PP_SIGNATURE = 0x40 + POISON_POINTER_DELTA

# include/linux/page-flags.h: the low bits of page->mapping
PAGE_MAPPING_ANON = 0x1
PAGE_MAPPING_MOVABLE = 0x2
PAGE_MAPPING_KSM = PAGE_MAPPING_ANON | PAGE_MAPPING_MOVABLE
PAGE_MAPPING_FLAGS = 0x3

# Migratetype names, enum migratetype (include/linux/mmzone.h); read from the
# debug info when present, this list only names them when it is not.
MIGRATETYPE_FALLBACK = ("Unmovable", "Movable", "Reclaimable", "HighAtomic", "CMA", "Isolate")
