"""Reserved pages and the zero pages.

PG_reserved pages were never given to the buddy allocator (or were taken
back with it set): the kernel image, the memmap itself when it came from
memblock, the initrd while it is still reserved, firmware and memblock
reservations.  This module names them:

* kernel image sections by the pfn ranges of ``_text``/``_etext`` (text),
  ``__start_rodata``/``__end_rodata`` (rodata), ``_sdata``/``_edata``
  (data), ``__init_begin``/``__init_end`` (init), ``__bss_start``/
  ``__bss_stop`` (bss) and up to ``_end`` (brk and the rest);
* the memmap: the pfns that back ``struct page`` arrays, found by walking
  the kernel page tables over the vmemmap of every present section (once,
  cached as a pfn set);
* the initrd: ``initrd_start``/``initrd_end`` when still set;
* the zero page (``empty_zero_page``) and the huge zero page
  (``huge_zero_page`` up to v6.9, ``huge_zero_folio`` since v6.10).

Checked on v5.10, v6.1, v6.12 and v7.x Debian cloud kernels.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Set, Tuple

from ..kernel import Kernel
from ..memmap import memmap_of
from ..owner import Owner, register
from ..page import Page
from ..target import FaultError
from .kutil import cstr, is_kernel_ptr, map_range

# (section name, start symbols, end symbols), first found wins; x86-64
# arch/x86/kernel/vmlinux.lds.S
_SECTIONS = (
    ("text", ("_text", "_stext"), ("_etext",)),
    ("rodata", ("__start_rodata",), ("__end_rodata",)),
    ("data", ("_sdata",), ("_edata",)),
    ("percpu (first chunk template)", ("__per_cpu_load",), ("__per_cpu_end_load",)),
    ("init", ("__init_begin",), ("__init_end",)),
    ("bss", ("__bss_start",), ("__bss_stop",)),
    ("brk", ("__brk_base",), ("__brk_limit",)),
)


def _sym(k: Kernel, names: Tuple[str, ...]) -> Optional[int]:
    for n in names:
        a = k.sym_opt(n)
        if a is not None:
            return a
    return None


def image_sections(k: Kernel) -> List[Tuple[str, int, int]]:
    """(name, first pfn, end pfn) of the kernel image's sections."""
    return k.once("reserved.sections", _image_sections)


def _image_sections(k: Kernel) -> List[Tuple[str, int, int]]:
    out: List[Tuple[str, int, int]] = []
    for name, starts, ends in _SECTIONS:
        a, b = _sym(k, starts), _sym(k, ends)
        if a is None or b is None or b <= a:
            continue
        pa, pb = k.virt_to_pfn(a), k.virt_to_pfn(b - 1)
        if pa is None or pb is None:
            continue
        out.append((name, pa, pb + 1))
    text = _sym(k, ("_text",))
    end = _sym(k, ("_end",))
    if text is not None and end is not None:
        pa, pb = k.virt_to_pfn(text), k.virt_to_pfn(end - 1)
        if pa is not None and pb is not None:
            out.append(("kernel image", pa, pb + 1))
    return out


def image_section_of(k: Kernel, pfn: int) -> Optional[str]:
    """The kernel image section holding ``pfn``, or None."""
    for name, a, b in image_sections(k):
        if a <= pfn < b:
            return name
    return None


def memmap_pfns(k: Kernel) -> Set[int]:
    """pfns of the pages that hold the vmemmap of every present section."""
    memo = k.memo.get("reserved.memmap")
    if memo is not None:
        return memo  # type: ignore[return-value]
    mm = memmap_of(k)
    out: Set[int] = set()
    for a, b in mm.ranges():
        start = k.pfn_to_page(a)
        end = k.pfn_to_page(b)
        for _, pfn in map_range(k, start, end, 1 << 22):
            out.add(pfn)
    k.memo["reserved.memmap"] = out
    return out


def _initrd(k: Kernel) -> Optional[Tuple[int, int]]:
    s, e = k.sym_opt("initrd_start"), k.sym_opt("initrd_end")
    if s is None or e is None:
        return None
    try:
        a, b = k.u64(s), k.u64(e)
    except FaultError:
        return None
    if not a or b <= a:
        return None
    pa, pb = k.virt_to_pfn(a), k.virt_to_pfn(b - 1)
    if pa is None or pb is None:
        return None
    return pa, pb + 1


MAX_RESOURCES = 1 << 14


def iomem_ranges(k: Kernel) -> List[Tuple[int, int, int, str]]:
    """(start, end inclusive, depth, name) of every resource under
    ``iomem_resource`` (what /proc/iomem lists), walked once, bounded."""
    memo = k.memo.get("reserved.iomem")
    if memo is not None:
        return memo  # type: ignore[return-value]
    out: List[Tuple[int, int, int, str]] = []
    root = k.sym_opt("iomem_resource")
    R = "struct resource"
    if root is not None and k.sizeof_opt(R):
        o_start, o_end = k.off(R, "start"), k.off(R, "end")
        o_name, o_child, o_sib = k.off(R, "name"), k.off(R, "child"), k.off(R, "sibling")
        seen: Set[int] = set()
        stack = [(k.u64(root + o_child), 0)]
        while stack and len(out) < MAX_RESOURCES:
            node, depth = stack.pop()
            while is_kernel_ptr(node) and node not in seen and len(out) < MAX_RESOURCES and depth < 16:
                seen.add(node)
                try:
                    start, end = k.u64(node + o_start), k.u64(node + o_end)
                    name = cstr(k, k.u64(node + o_name), 64) or "?"
                    child, sib = k.u64(node + o_child), k.u64(node + o_sib)
                except FaultError:
                    break
                out.append((start, end, depth, name))
                if child:
                    stack.append((child, depth + 1))
                node = sib
    k.memo["reserved.iomem"] = out
    return out


def iomem_name(k: Kernel, phys: int) -> Optional[str]:
    """The name of the innermost iomem resource overlapping the page at
    ``phys``, preferring anything over "System RAM" (a page can straddle
    the edge of a firmware range), or None."""
    best = None
    last = phys + k.page_size - 1
    for start, end, depth, name in iomem_ranges(k):
        if start <= last and phys <= end:
            rank = (name != "System RAM", depth)
            if best is None or rank > best[0]:
                best = (rank, name)
    return None if best is None else best[1]


def huge_zero_pfn(k: Kernel) -> Optional[int]:
    """Head pfn of the huge zero folio, if one is allocated."""
    memo = k.memo.get("reserved.hzp")
    if memo is None:
        pfn = -1
        for name in ("huge_zero_folio", "huge_zero_page"):
            addr = k.sym_opt(name)
            if addr is None:
                continue
            try:
                ptr = k.u64(addr)
            except FaultError:
                continue
            if is_kernel_ptr(ptr):
                p = k.page_to_pfn(ptr)
                if p is not None:
                    pfn = p
            break
        k.memo["reserved.hzp"] = memo = pfn
    return None if memo < 0 else memo  # type: ignore[operator]


def name_huge_zero(k: Kernel, page: Page, head: Page, owner: Owner) -> bool:
    hz = huge_zero_pfn(k)
    if hz is None or head.pfn != hz:
        return False
    owner.kind = "zero"
    owner.detail["which"] = "huge zero page"
    owner.detail["head_pfn"] = hz
    owner.detail["summary"] = "the huge zero page (head pfn %#x, order %d)" % (hz, head.order)
    return True


@register("zero")
def name_zero(k: Kernel, page: Page, head: Page, owner: Owner) -> None:
    if name_huge_zero(k, page, head, owner):
        return
    owner.detail["which"] = "empty_zero_page"
    owner.detail["summary"] = "empty_zero_page, the shared zero-filled page"


@register("reserved")
def name_reserved(k: Kernel, page: Page, head: Page, owner: Owner) -> None:
    d: Dict[str, object] = owner.detail
    pfn = page.pfn
    if name_huge_zero(k, page, head, owner):
        return
    section = image_section_of(k, pfn)
    if section is not None:
        d["what"] = "kernel image"
        d["section"] = section
        d["summary"] = "kernel image: %s" % section if section != "kernel image" else "kernel image"
        return
    if pfn in memmap_pfns(k):
        d["what"] = "memmap"
        d["summary"] = "memmap: backs struct pages (vmemmap)"
        return
    rd = _initrd(k)
    if rd is not None and rd[0] <= pfn < rd[1]:
        d["what"] = "initrd"
        d["summary"] = "initrd (pfns %#x-%#x), still reserved" % (rd[0], rd[1] - 1)
        return
    res = iomem_name(k, pfn << k.page_shift)
    d["iomem"] = res
    if res is not None and res != "System RAM":
        d["what"] = "firmware"
        d["summary"] = "firmware range \"%s\" (/proc/iomem), never given to the page allocator" % res
        return
    d["what"] = "memblock/firmware"
    d["summary"] = ("a memblock reservation inside System RAM (early boot allocation, "
                    "firmware table or a driver's reserve), not managed by the page allocator")
