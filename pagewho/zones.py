"""Memory zones: which zone a pfn is in, and the zone structs themselves.

Zones are found through ``node_data[]`` (CONFIG_NUMA) or
``contig_page_data``, each ``pg_data_t`` holding ``node_zones[]``
(include/linux/mmzone.h).  A pfn's zone is the populated zone whose span
[zone_start_pfn, zone_start_pfn + spanned_pages) holds it; this avoids
decoding the config-dependent zone bits of page->flags.
"""

from __future__ import annotations

from typing import List, Optional

from .kernel import Kernel
from .target import FaultError
from .text import clean


class Zone:
    """One populated zone: where it lives and what it spans."""

    __slots__ = ("address", "node", "index", "name", "start_pfn", "end_pfn")

    def __init__(self, address: int, node: int, index: int, name: str, start_pfn: int, end_pfn: int) -> None:
        self.address = address
        self.node = node
        self.index = index
        self.name = name
        self.start_pfn = start_pfn
        self.end_pfn = end_pfn

    def __repr__(self) -> str:
        return "Zone(node %d %s %#x-%#x)" % (self.node, self.name, self.start_pfn, self.end_pfn)


def _pgdats(k: Kernel) -> List[int]:
    addr = k.sym_opt("node_data")
    if addr is None:
        return [k.sym("contig_page_data")]
    # nr_node_ids bounds node_data[] (mm/page_alloc.c, CONFIG_NUMA)
    ids = k.sym_opt("nr_node_ids")
    nodes = k.u32(ids) if ids is not None else 1
    out = []
    raw = k.read(addr, 8 * min(nodes, 1024))
    for i in range(0, len(raw), 8):
        p = int.from_bytes(raw[i:i + 8], "little")
        if p:
            out.append(p)
    return out


def zones(k: Kernel) -> List[Zone]:
    """All populated zones, learned once per kernel."""
    cached = k.memo.get("zones")
    if cached is not None:
        return cached  # type: ignore[return-value]
    Z = "struct zone"
    zsize = k.sizeof(Z)
    off_zones = k.off("struct pglist_data", "node_zones")
    off_nid = k.off_opt("struct pglist_data", "node_id")
    nr_zones = len(k.enumerators("enum zone_type")) - 1 or 4  # minus __MAX_NR_ZONES
    off_start = k.off(Z, "zone_start_pfn")
    off_spanned = k.off(Z, "spanned_pages")
    off_name = k.off(Z, "name")
    out: List[Zone] = []
    for node_index, pgdat in enumerate(_pgdats(k)):
        try:
            node = k.u32(pgdat + off_nid) if off_nid is not None else node_index
            for i in range(nr_zones):
                z = pgdat + off_zones + i * zsize
                spanned = k.u64(z + off_spanned)
                if not spanned:
                    continue
                start = k.u64(z + off_start)
                name = clean(k.cstring(k.u64(z + off_name), 16))
                out.append(Zone(z, node, i, name, start, start + spanned))
        except FaultError:
            continue
    k.memo["zones"] = out
    return out


def zone_of(k: Kernel, pfn: int) -> Optional[Zone]:
    """The zone spanning ``pfn``, or None (a hole between zones)."""
    for z in zones(k):
        if z.start_pfn <= pfn < z.end_pfn:
            return z
    return None
