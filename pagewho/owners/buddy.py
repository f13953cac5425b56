"""Free pages: buddy blocks, pages inside them, and per-cpu (pcp) lists.

Only the head page of a free buddy block carries the buddy page type, with
the block's order in ``page->private`` (mm/page_alloc.c set_buddy_order);
the other pages of the block look like any page with refcount 0.  Pages on
a per-cpu list carry no mark at all (DESIGN.md §4), so a refcount-0 page is
explained by looking for the buddy head that covers it (candidate heads
``pfn & ~((1 << o) - 1)``) and then for it on the pcp lists.

pcp lists: ``zone->per_cpu_pageset`` (``struct per_cpu_pages __percpu *``,
v5.14+, "mm/page_alloc: split per cpu page lists and zone stats") or
``zone->pageset`` (``struct per_cpu_pageset __percpu *`` with ``.pcp``, up
to v5.13); pages are linked through ``page->lru``, named ``pcp_list`` in
the same union since v6.1.  Since v5.15 ("mm/page_alloc: allow high-order
pages to be stored on the per-cpu lists") list index ``i`` holds order
``i // MIGRATE_PCPTYPES`` blocks below PAGE_ALLOC_COSTLY_ORDER + 1 lists
per type, then THP-order lists.

Migratetype comes from the pageblock bitmap of the pfn's memory section
(``mem_section.usage->pageblock_flags``, include/linux/pageblock-flags.h),
with the bit layout read from ``enum pageblock_bits``.

Checked on v5.10, v6.1, v6.12 and v7.x Debian cloud kernels.
"""

from __future__ import annotations

import struct
from typing import Dict, Optional, Tuple

from ..kernel import Kernel
from ..owner import Owner, register
from ..page import Page, decoder_of
from ..target import FaultError
from ..versions import MIGRATETYPE_FALLBACK
from ..zones import zone_of, zones
from .kutil import list_nodes, percpu_offsets

PAGE_ALLOC_COSTLY_ORDER = 3  # include/linux/mmzone.h, unchanged since v2.6.23
MAX_PCP_PAGES = 1 << 21  # bound of one whole pcp walk


def nr_page_orders(k: Kernel) -> int:
    """NR_PAGE_ORDERS (MAX_ORDER before v6.4): the length of zone->free_area."""
    n = k.memo.get("buddy.orders")
    if n is None:
        total = k.member_size("struct zone", "free_area")
        one = k.sizeof_opt("struct free_area")
        n = total // one if total and one else 11
        k.memo["buddy.orders"] = n
    return n  # type: ignore[return-value]


def pageblock_order(k: Kernel) -> int:
    """pageblock_order: a variable with CONFIG_HUGETLB_PAGE_SIZE_VARIABLE,
    else HUGETLB_PAGE_ORDER (9 on x86-64)."""
    v = k.memo.get("buddy.pb_order")
    if v is None:
        v = k.var("pageblock_order", 9, 4)
        if not 0 < v < 20:
            v = 9
        k.memo["buddy.pb_order"] = v
    return v  # type: ignore[return-value]


def migratetype_names(k: Kernel) -> Dict[int, str]:
    """Migratetype value -> name, from enum migratetype."""
    names = k.memo.get("buddy.mt_names")
    if names is None:
        names = {}
        enum = k.enumerators("enum migratetype")
        for name, value in sorted(enum.items(), key=lambda kv: kv[1]):
            if name in ("MIGRATE_PCPTYPES", "MIGRATE_TYPES") or name.startswith("__"):
                continue
            names.setdefault(value, name[len("MIGRATE_"):].capitalize())
        if not names:
            names = dict(enumerate(MIGRATETYPE_FALLBACK))
        k.memo["buddy.mt_names"] = names
    return names  # type: ignore[return-value]


def migratetype(k: Kernel, pfn: int) -> Optional[str]:
    """The migratetype of the pageblock holding ``pfn``, or None."""
    lay = k.memo.get("buddy.pb")
    if lay is None:
        enum = k.enumerators("enum pageblock_bits")
        nr = enum.get("NR_PAGEBLOCK_BITS")
        if nr is None:
            # v6.16+: __NR_PAGEBLOCK_BITS rounded up to a power of two
            raw = enum.get("__NR_PAGEBLOCK_BITS", 4)
            nr = 1
            while nr < raw:
                nr <<= 1
        if "PB_migrate_end" in enum:
            mbits = enum["PB_migrate_end"] - enum.get("PB_migrate", 0) + 1
        else:
            mbits = 3
        lay = (nr, (1 << mbits) - 1, enum.get("PB_migrate_isolate"))
        k.memo["buddy.pb"] = lay
    nr_bits, mask, isolate_bit = lay  # type: ignore[misc]
    from ..memmap import memmap_of

    mm = memmap_of(k)
    off_usage = k.off_opt("struct mem_section", "usage")
    off_flags = k.off_opt("struct mem_section_usage", "pageblock_flags")
    if off_usage is None or off_flags is None:
        return None
    nr = mm.section_of(pfn)
    ms_size = k.sizeof("struct mem_section")
    per_root = k.page_size // ms_size
    roots = k.u64(k.sym("mem_section"))
    root = k.u64(roots + (nr // per_root) * 8)
    if not root:
        return None
    usage = k.u64(root + (nr % per_root) * ms_size + off_usage)
    if not usage:
        return None
    bitidx = ((pfn & (mm.pages_per_section - 1)) >> pageblock_order(k)) * nr_bits
    word = k.u64(usage + off_flags + (bitidx // 64) * 8)
    value = word >> (bitidx % 64)
    names = migratetype_names(k)
    if isolate_bit is not None and value >> isolate_bit & 1:
        return "Isolate"
    mt = value & mask
    return names.get(mt, "type %d" % mt)


def _buddy_head(k: Kernel, pfn: int) -> Optional[Tuple[int, int]]:
    """(head pfn, order) of the free buddy block strictly containing ``pfn``."""
    d = decoder_of(k)
    for o in range(1, nr_page_orders(k)):
        h = pfn & ~((1 << o) - 1)
        if h == pfn or not d.memmap.valid(h):
            continue
        try:
            hp = d.read_page(h)
        except FaultError:
            continue
        if hp.page_type == "buddy" and hp.private < nr_page_orders(k) and h + (1 << hp.private) > pfn:
            return h, hp.private
    return None


def _linked(k: Kernel, page: Page) -> bool:
    """Whether a buddy head's list_head (buddy_list, lru before v6.1) sits
    in a doubly linked list: next->prev and prev->next point back at it."""
    off = k.off_opt("struct page", "buddy_list")
    if off is None:
        off = k.off("struct page", "lru")
    node = page.address + off
    nxt, prev = struct.unpack("<QQ", k.read(node, 16))
    try:
        return k.u64(nxt + 8) == node and k.u64(prev) == node
    except FaultError:
        return False


class _Pcp:
    __slots__ = ("cpu", "zone", "index", "order", "list_mt")

    def __init__(self, cpu: int, zone: str, index: int, order: int, list_mt: Optional[int] = None) -> None:
        self.cpu = cpu
        self.zone = zone
        self.index = index
        self.order = order
        #: the migratetype the list is for (mm/page_alloc.c order_to_pindex)
        self.list_mt = list_mt


def _pcp_index(k: Kernel) -> Dict[int, _Pcp]:
    """head pfn -> where it sits on a pcp list; one walk per kernel."""
    idx = k.memo.get("buddy.pcp")
    if idx is not None:
        return idx  # type: ignore[return-value]
    out: Dict[int, _Pcp] = {}
    Z = "struct zone"
    P = "struct per_cpu_pages"
    off_zpcp = k.off_opt(Z, "per_cpu_pageset")
    if off_zpcp is not None:
        inner = 0
    else:
        off_zpcp = k.off(Z, "pageset")
        inner = k.off("struct per_cpu_pageset", "pcp")
    off_lists = k.off(P, "lists")
    off_count = k.off(P, "count")
    valid = decoder_of(k).memmap.valid
    nlists = (k.member_size(P, "lists") or 16) // 16
    pcptypes = k.enum("MIGRATE_PCPTYPES") or 3
    low_lists = pcptypes * (PAGE_ALLOC_COSTLY_ORDER + 1)
    off_link = k.off_opt("struct page", "pcp_list")
    if off_link is None:
        off_link = k.off("struct page", "lru")
    total = 0
    for z in zones(k):
        try:
            base = k.u64(z.address + off_zpcp)
        except FaultError:
            continue
        for cpu, off in percpu_offsets(k).items():
            pcp = ((base + off) & 0xFFFFFFFFFFFFFFFF) + inner
            # one read per cpu: the count and every list head
            try:
                raw = k.read(pcp, off_lists + 16 * nlists)
            except FaultError:
                continue
            count = struct.unpack_from("<i", raw, off_count)[0]
            if not 0 < count <= MAX_PCP_PAGES:
                continue  # empty, or not a per_cpu_pages
            for i in range(nlists):
                head = pcp + off_lists + 16 * i
                if struct.unpack_from("<Q", raw, off_lists + 16 * i)[0] == head:
                    continue  # empty list
                list_mt: Optional[int] = None
                if nlists <= pcptypes:
                    order, list_mt = 0, i
                elif i < low_lists:
                    order, list_mt = i // pcptypes, i % pcptypes
                else:
                    order = pageblock_order(k)
                try:
                    # pcp->count counts pages, so a list has at most count blocks
                    for node in list_nodes(k, head, min(count, MAX_PCP_PAGES - total)):
                        pfn = k.page_to_pfn(node - off_link)
                        if pfn is None or not valid(pfn):
                            break  # not a struct page: corrupt list
                        total += 1
                        out[pfn] = _Pcp(cpu, z.name, i, order, list_mt)
                except FaultError:
                    continue
    k.memo["buddy.pcp"] = out
    return out


def _on_pcp(k: Kernel, pfn: int) -> Optional[Tuple[int, _Pcp]]:
    idx = _pcp_index(k)
    for o in range(0, nr_page_orders(k)):
        h = pfn & ~((1 << o) - 1)
        entry = idx.get(h)
        if entry is not None and entry.order >= o and h + (1 << entry.order) > pfn:
            return h, entry
    return None


def _zone_name(k: Kernel, pfn: int) -> Optional[str]:
    z = zone_of(k, pfn)
    return None if z is None else z.name


@register("buddy")
def name_buddy(k: Kernel, page: Page, head: Page, owner: Owner) -> None:
    d = owner.detail
    order = d.get("order", page.private)
    if not 0 <= order < nr_page_orders(k):
        owner.notes.append("buddy order %d is out of range (corrupt or racing)" % order)
        d["summary"] = "free buddy page with bad order %d" % order
        return
    block = d.get("block_pfn", page.pfn)
    mt = migratetype(k, block)
    zone = _zone_name(k, block)
    d["migratetype"] = mt
    d["zone"] = zone
    d["nr_pages"] = 1 << order
    where = d.get("where", "block head")
    if where == "block head":
        text = "head of a free order-%d block (%d pages)" % (order, 1 << order)
        if not _linked(k, page):
            owner.notes.append("marked buddy but not linked into a free list (being split or merged, "
                               "or corrupt)")
    else:
        text = "page %d of the free order-%d block at pfn %#x" % (page.pfn - block, order, block)
    d["summary"] = "%s, %s, zone %s" % (text, mt or "migratetype ?", zone or "?")


@register("free")
def name_free(k: Kernel, page: Page, head: Page, owner: Owner) -> None:
    d = owner.detail
    found = _buddy_head(k, page.pfn)
    if found is not None:
        block, order = found
        owner.kind = "buddy"
        d.update(where="inside block", block_pfn=block, order=order)
        name_buddy(k, page, head, owner)
        return
    pcp = _on_pcp(k, page.pfn)
    if pcp is not None:
        block, e = pcp
        owner.kind = "pcp"
        mt = migratetype(k, page.pfn)
        list_mt = None if e.list_mt is None else migratetype_names(k).get(e.list_mt)
        d.update(cpu=e.cpu, zone=e.zone, list=e.index, list_migratetype=list_mt, order=e.order,
                 block_pfn=block, migratetype=mt)
        if e.order:
            text = "page %d of an order-%d block on cpu %d's pcp list %d%s" % (
                page.pfn - block, e.order, e.cpu, e.index, " (%s)" % list_mt if list_mt else "")
        else:
            text = "on cpu %d's pcp list %d%s" % (e.cpu, e.index, " (%s)" % list_mt if list_mt else "")
        d["summary"] = "%s, zone %s, pageblock %s" % (text, e.zone, mt or "migratetype ?")
        return
    zone = _zone_name(k, page.pfn)
    d["zone"] = zone
    guess = _noncompound_head(k, page.pfn)
    if guess is not None:
        h, order, kind = guess
        d.update(probable_allocation_pfn=h, probable_order=order, probable_kind=kind)
        d["summary"] = ("refcount 0, in no free block and on no pcp list: probably page %d of a "
                        "non-compound order-%d allocation at pfn %#x (%s), whose first page holds "
                        "the reference" % (page.pfn - h, order, h, kind))
        return
    d["summary"] = ("refcount 0 but in no free buddy block and on no pcp list: "
                    "being allocated or freed, or held by a driver that keeps refcount 0")


def _noncompound_head(k: Kernel, pfn: int) -> Optional[Tuple[int, int, str]]:
    """(head pfn, order, head's kind) when ``pfn`` looks like a later page of
    a high-order allocation made without __GFP_COMP: alloc_pages() then sets
    the refcount of the first page only, so the rest read as refcount 0.
    The first page must be the nearest page below with a reference, every
    page between must be unused, and the block must be aligned to its order."""
    from ..owner import classify

    d = decoder_of(k)
    top = nr_page_orders(k) - 1
    base = pfn & ~((1 << top) - 1)
    if not d.memmap.valid(base) or pfn == base:
        return None
    size = k.struct_page_size
    count = 1 << top
    try:
        raw = d.memmap.read_pages(base, count)
    except FaultError:
        count = pfn - base + 1
        raw = d.memmap.read_pages(base, count)

    def unused(q: Page) -> bool:
        return q.refcount == 0 and q.page_type is None and not (q.is_tail or q.is_head)

    for h in range(pfn - 1, base - 1, -1):
        p = d.decode(h, raw, (h - base) * size, next_ok=False)
        if p.page_type is not None or p.is_tail or p.is_head:
            return None
        if p.refcount == 0:
            continue
        # the run of unused pages after h: how far the allocation reaches
        end = pfn
        while end + 1 < base + count and unused(d.decode(end + 1, raw, (end + 1 - base) * size, next_ok=False)):
            end += 1
        order = 0
        while h + (1 << order) <= end:
            order += 1
        while order and h & ((1 << order) - 1):
            order -= 1
        if order == 0 or h + (1 << order) <= pfn:
            return None
        return h, order, classify(k, p, p).kind
    return None
