"""Slab pages: which cache, which objects lie on this pfn, how many are free.

SLUB keeps its per-slab state in the head page's memory: ``struct slab``
overlays ``struct page`` since v5.17 ("mm: Split slab into its own type");
before that the same fields (``slab_cache``, ``freelist``, ``counters``)
are members of ``struct page``.  The ``counters`` word holds the bitfields
``inuse:16, objects:15, frozen:1`` (mm/slab.h, mm_types.h); their byte
offsets are read from the debug info and checked, never assumed.

Free objects are found by walking the slab's freelist and, on kernels that
still have ``kmem_cache_cpu`` (up to v6.x; v7.0 replaced it with sheaves),
the lockless per-cpu freelists of the cpus whose current slab this is.
With CONFIG_SLAB_FREELIST_HARDENED (``kmem_cache.random`` exists) each
stored pointer is ``ptr ^ s->random ^ swab(address it is stored at)``
(v5.7+, "slub: improve bit diffusion for freelist ptr obfuscation").
Every walk is bounded by the slab's object count.

Checked on v5.10, v6.1, v6.12 and v7.x Debian cloud kernels.
"""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Optional, Set, Tuple

from ..kernel import Kernel
from ..owner import Owner, register
from ..page import Page
from ..target import FaultError
from .kutil import cstr, is_kernel_ptr, percpu_offsets


class _Layout:
    """Where SLUB's per-slab and per-cache fields live in this kernel."""

    def __init__(self, k: Kernel) -> None:
        S = "struct slab" if k.sizeof_opt("struct slab") else "struct page"
        self.type = S
        self.size = k.sizeof(S)
        self.off_cache = k.off(S, "slab_cache")
        self.off_freelist = k.off_opt(S, "freelist")
        self.off_counters = k.off_opt(S, "counters")
        inuse = k.off_opt(S, "inuse")
        objects = k.off_opt(S, "objects")
        # inuse:16 then objects:15 in one unsigned int: objects two bytes on
        self.bitfields_ok = inuse is not None and objects is not None and objects == inuse + 2
        self.off_inuse = inuse
        self.off_objects = objects
        C = "struct kmem_cache"
        self.c_name = k.off(C, "name")
        self.c_size = k.off(C, "size")
        self.c_object_size = k.off(C, "object_size")
        self.c_offset = k.off_opt(C, "offset")  # SLUB only
        self.c_random = k.off_opt(C, "random")  # CONFIG_SLAB_FREELIST_HARDENED
        self.c_red_left_pad = k.off_opt(C, "red_left_pad")
        self.c_oo = k.off_opt(C, "oo")
        # per-cpu slabs: kmem_cache_cpu up to v6.x (gone with sheaves in v7.0)
        self.c_cpu_slab = k.off_opt(C, "cpu_slab")
        CC = "struct kmem_cache_cpu"
        self.cc_freelist = k.off_opt(CC, "freelist") if self.c_cpu_slab is not None else None
        cc_slab = k.off_opt(CC, "slab") if self.c_cpu_slab is not None else None
        if cc_slab is None and self.c_cpu_slab is not None:
            cc_slab = k.off_opt(CC, "page")
        self.cc_slab = cc_slab


def _layout(k: Kernel) -> _Layout:
    lay = k.memo.get("slab.layout")
    if lay is None:
        lay = _Layout(k)
        k.memo["slab.layout"] = lay
    return lay  # type: ignore[return-value]


class _Cache:
    """One kmem_cache, read once."""

    __slots__ = ("address", "name", "size", "object_size", "offset", "random",
                 "red_left_pad", "oo_objects", "cpu_freelists")

    def __init__(self, k: Kernel, lay: _Layout, address: int) -> None:
        self.address = address
        self.name = cstr(k, k.u64(address + lay.c_name)) or "?"
        self.size = k.u32(address + lay.c_size)
        self.object_size = k.u32(address + lay.c_object_size)
        self.offset = None if lay.c_offset is None else k.u32(address + lay.c_offset)
        self.random = None if lay.c_random is None else k.u64(address + lay.c_random)
        self.red_left_pad = 0 if lay.c_red_left_pad is None else k.u32(address + lay.c_red_left_pad)
        self.oo_objects = None
        if lay.c_oo is not None:
            self.oo_objects = k.u32(address + lay.c_oo) & 0xFFFF
        #: slab address -> [(cpu, lockless freelist head)], read lazily
        self.cpu_freelists: Optional[Dict[int, List[Tuple[int, int]]]] = None


def _cache(k: Kernel, lay: _Layout, address: int) -> _Cache:
    caches: Dict[int, _Cache] = k.memo.setdefault("slab.caches", {})  # type: ignore[assignment]
    c = caches.get(address)
    if c is None:
        c = _Cache(k, lay, address)
        caches[address] = c
    return c


def _swab64(x: int) -> int:
    return int.from_bytes(x.to_bytes(8, "little"), "big")


def _cpu_freelists(k: Kernel, lay: _Layout, c: _Cache) -> Dict[int, List[Tuple[int, int]]]:
    """slab address -> [(cpu, freelist)] for the cache's per-cpu slabs."""
    if c.cpu_freelists is not None:
        return c.cpu_freelists
    out: Dict[int, List[Tuple[int, int]]] = {}
    if lay.c_cpu_slab is not None and lay.cc_slab is not None and lay.cc_freelist is not None:
        base = k.u64(c.address + lay.c_cpu_slab)
        for cpu, off in percpu_offsets(k).items():
            addr = (base + off) & 0xFFFFFFFFFFFFFFFF
            try:
                slab = k.u64(addr + lay.cc_slab)
                fl = k.u64(addr + lay.cc_freelist)
            except FaultError:
                continue
            if slab:
                out.setdefault(slab, []).append((cpu, fl))
    c.cpu_freelists = out
    return out


def _walk_freelist(k: Kernel, c: _Cache, first: int, start: int, objects: int,
                   free: Set[int]) -> Optional[str]:
    """Add the objects of the freelist starting at ``first`` to ``free``;
    return a problem description, or None when the walk ended cleanly."""
    if c.offset is None:
        return "not SLUB: no freelist offset"
    end = start + objects * c.size
    ptr = first
    steps = 0
    while ptr:
        if not start <= ptr < end or (ptr - start - c.red_left_pad) % c.size:
            return "freelist pointer %#x outside the slab" % ptr
        if ptr in free:
            return "freelist loops at %#x" % ptr
        free.add(ptr)
        steps += 1
        if steps > objects:
            return "freelist longer than the slab"
        at = ptr + c.offset
        stored = k.u64(at)
        if c.random is not None:
            stored ^= c.random ^ _swab64(at)
        ptr = stored
    return None


def _kfence_page(k: Kernel, pfn: int, objects: int, c: _Cache) -> bool:
    """A page of the KFENCE pool: KFENCE sets slab->objects = 1 on its pages
    (mm/kfence/core.c kfence_guarded_alloc); the pool starts at __kfence_pool
    (NULL when KFENCE is off)."""
    if objects != 1 or c.oo_objects == 1:
        return False
    pool = k.memo.get("slab.kfence")
    if pool is None:
        pool = k.var("__kfence_pool", 0)
        k.memo["slab.kfence"] = pool
    if not pool:
        return False
    first = k.virt_to_pfn(pool)  # type: ignore[arg-type]
    return first is not None and pfn >= first


def _range_text(first: int, last: int) -> str:
    return "%d" % first if first == last else "%d-%d" % (first, last)


@register("slab")
def name_slab(k: Kernel, page: Page, head: Page, owner: Owner) -> None:
    lay = _layout(k)
    raw = k.read(head.address, lay.size)
    cache_ptr = struct.unpack_from("<Q", raw, lay.off_cache)[0]
    if not is_kernel_ptr(cache_ptr):
        owner.detail["summary"] = "slab page without a cache (slab_cache %#x)" % cache_ptr
        owner.notes.append("slab_cache is not a kernel pointer: being freed or corrupt")
        return
    c = _cache(k, lay, cache_ptr)
    d: Dict[str, Any] = owner.detail
    d["cache"] = c.name
    d["cache_address"] = cache_ptr
    d["object_size"] = c.object_size
    d["slot_size"] = c.size
    d["slab_pfn"] = head.pfn
    d["slab_pages"] = 1 << (head.order if head.is_head else 0)

    objects = inuse = None
    frozen = False
    if lay.bitfields_ok:
        word = struct.unpack_from("<I", raw, lay.off_inuse)[0]  # type: ignore[arg-type]
        inuse = word & 0xFFFF
        objects = (word >> 16) & 0x7FFF
        frozen = bool(word >> 31)
    else:
        owner.notes.append("slab counters bitfield layout not recognised; objects from the cache")
    if not objects and c.oo_objects:
        objects = c.oo_objects
    if not objects or c.size == 0:
        d["summary"] = "cache %s (%d B objects)" % (c.name, c.object_size)
        return
    d["objects"] = objects
    d["inuse"] = inuse
    d["frozen"] = frozen
    if objects * c.size > d["slab_pages"] << k.page_shift:
        owner.notes.append("%d objects of %d B do not fit in the slab's %d pages: corrupt counters, "
                           "or a cache pointer that is not this slab's" % (objects, c.size, d["slab_pages"]))
        d["summary"] = "cache %s (%d B objects), slab counters inconsistent" % (c.name, c.object_size)
        return
    if _kfence_page(k, page.pfn, objects, c):
        # mm/kfence/core.c: one object per guarded page, placed at either end
        d["kfence"] = True
        d["summary"] = "cache %s: one KFENCE-guarded object (%d B) on this page" % (c.name, c.object_size)
        return

    start = k.pfn_to_virt(head.pfn)
    page_off = (page.pfn - head.pfn) << k.page_shift
    first = max(0, page_off // c.size)
    last = min(objects - 1, (page_off + k.page_size - 1) // c.size)
    here: List[int] = []
    if first <= last:
        here = [start + c.red_left_pad + i * c.size for i in range(first, last + 1)]
        d["first_object"] = first
        d["last_object"] = last
        d["object_addresses"] = ["%#x" % a for a in here[:4]] + (["..."] if len(here) > 4 else [])

    # free objects: the slab's freelist plus per-cpu lockless freelists
    free: Set[int] = set()
    problem = None
    if lay.off_freelist is not None and c.offset is not None:
        fl = struct.unpack_from("<Q", raw, lay.off_freelist)[0]
        problem = _walk_freelist(k, c, fl, start, objects, free)
        cpus = []
        for cpu, cfl in _cpu_freelists(k, lay, c).get(head.address, []):
            cpus.append(cpu)
            problem = _walk_freelist(k, c, cfl, start, objects, free) or problem
        if cpus:
            d["cpu_slab_of"] = cpus
    if problem:
        owner.notes.append("free objects not counted: " + problem)
        free_here = None
        in_use = inuse
    else:
        free_here = sum(1 for a in here if a in free)
        in_use = objects - len(free)
        if lay.c_cpu_slab is None and inuse is not None:
            # v7.0+: objects cached in per-cpu sheaves count as in use here
            in_use = inuse
        d["free_on_page"] = free_here
    d["in_use"] = in_use
    if first <= last:
        where = "objects %s of %d (%d B)" % (_range_text(first, last), objects, c.object_size)
    else:
        where = "no objects on this page (slab tail) of %d (%d B)" % (objects, c.object_size)
    text = "cache %s: %s, %s in use" % (c.name, where, in_use if in_use is not None else "?")
    if free_here is not None and here:
        text += ", %d free here" % free_here
    d["summary"] = text
