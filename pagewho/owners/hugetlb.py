"""hugetlb folios: size, hstate, free or in use, and who maps them.

The hstate is the entry of ``hstates[0 .. hugetlb_max_hstate)`` whose
``order`` equals the folio's order (mm/hugetlb.c size_to_hstate()).  A
hugetlb folio in the pool's free lists has refcount 0 (mm/hugetlb.c
enqueue_hugetlb_folio(); free pages are kept frozen at refcount 0); an
allocated one has refcount > 0 and ``mapping`` set to the anon_vma (private
mappings, low bit 1) or the hugetlbfs inode's address_space.

Checked on v5.10, v6.1, v6.12 and v7.x Debian cloud kernels.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from ..kernel import Kernel
from ..owner import Owner, register
from ..page import Page
from ..target import FaultError
from ..text import clean
from ..versions import PAGE_MAPPING_ANON, PAGE_MAPPING_FLAGS


def hstates(k: Kernel) -> List[Tuple[int, int, str]]:
    """(address, order, name) of every registered hstate."""
    memo = k.memo.get("hugetlb.hstates")
    if memo is not None:
        return memo  # type: ignore[return-value]
    out: List[Tuple[int, int, str]] = []
    base = k.sym_opt("hstates")
    if base is not None:
        size = k.sizeof("struct hstate")
        off_order = k.off("struct hstate", "order")
        off_name = k.off("struct hstate", "name")
        nr_sym = k.sym_opt("hugetlb_max_hstate")
        nr = k.u32(nr_sym) if nr_sym is not None else 1
        for i in range(max(0, min(nr, 16))):
            h = base + i * size
            try:
                order = k.u32(h + off_order)
                name = clean(k.cstring(h + off_name, 32))
            except FaultError:
                continue
            out.append((h, order, name))
    k.memo["hugetlb.hstates"] = out
    return out


def _size_text(nbytes: int) -> str:
    if nbytes >= 1 << 30 and nbytes % (1 << 30) == 0:
        return "%d GiB" % (nbytes >> 30)
    if nbytes >= 1 << 20:
        return "%d MiB" % (nbytes >> 20)
    return "%d KiB" % (nbytes >> 10)


def _mappers(k: Kernel, page: Page, head: Page) -> List[Dict[str, object]]:
    """Processes mapping the folio, through the rmap code of the anon namer."""
    from .anon import hugetlb_mappers

    return [{key: m[key] for key in ("pid", "comm", "vaddr", "verified")}
            for m in hugetlb_mappers(k, page, head)]


@register("hugetlb")
def name_hugetlb(k: Kernel, page: Page, head: Page, owner: Owner) -> None:
    d = owner.detail
    order = head.order if head.is_head else 0
    size = k.page_size << order
    hs: Optional[Tuple[int, int, str]] = None
    for h in hstates(k):
        if h[1] == order:
            hs = h
            break
    d["order"] = order
    d["size"] = size
    d["head_pfn"] = head.pfn
    d["hstate"] = hs[2] if hs else None
    if hs is None:
        owner.notes.append("no hstate of order %d: not a hugetlb folio, or hstates unreadable" % order)
    free = head.refcount == 0
    d["free"] = free
    d["in_use"] = not free
    text = "%s hugetlb page%s" % (_size_text(size), " (%s)" % hs[2] if hs else "")
    if free:
        text += ", free in the hugetlb pool"
    else:
        mapping = head.mapping
        if mapping & PAGE_MAPPING_FLAGS == PAGE_MAPPING_ANON:
            d["anon_vma"] = mapping & ~PAGE_MAPPING_FLAGS
            d["mapped"] = "private (anon_vma %#x)" % d["anon_vma"]
        elif mapping:
            d["address_space"] = mapping
            d["mapped"] = "hugetlbfs file (address_space %#x)" % mapping
            d["index"] = head.index
        else:
            d["mapped"] = None
        text += ", in use (refcount %d)" % head.refcount
        found = _mappers(k, page, head)
        d["mappers"] = found
        if found:
            from .tasks import mappers_text

            text += ", mapped by " + mappers_text(found)
        elif d["mapped"]:
            text += ", " + d["mapped"]
    if page.pfn != head.pfn:
        text += ", page %d of the folio at pfn %#x" % (page.pfn - head.pfn, head.pfn)
    d["summary"] = text
