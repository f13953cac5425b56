"""Swap cache pages: which swap device and slot.

A folio in the swap cache keeps its swap entry in ``folio->private``
(``folio->swap`` since v6.6 overlays the same word).  The entry is the
arch-independent ``swp_entry_t`` of include/linux/swapops.h:

    type   = val >> SWP_TYPE_SHIFT
    offset = val & ((1 << SWP_TYPE_SHIFT) - 1)
    SWP_TYPE_SHIFT = BITS_PER_XA_VALUE - MAX_SWAPFILES_SHIFT = (64 - 1) - 5

(unchanged from v4.20, when BITS_PER_XA_VALUE replaced RADIX_TREE_EXCEPTIONAL_SHIFT,
through v7.x; MAX_SWAPFILES_SHIFT is 5 in include/linux/swap.h throughout).
This is not the PTE encoding of a swapped-out page (arch/x86 swaps bits
around in the PTE); it is the value the swap cache is indexed by.  A large
folio's page N uses entry + N (the head holds the first entry).

The device is ``swap_info[type]->swap_file`` (a struct file: its path).
Anon pages still in the swap cache after being read back are named by the
anon namer, which adds this detail.  A swap-cache page no anon_vma names is
owned by the processes whose PTEs hold its swap entry: x86-64 keeps the
type in the PTE's top 5 bits and the offset inverted from bit 9
(arch/x86/include/asm/pgtable_64.h since the L1TF fix, v4.19), decoded by
:func:`pagewho.owners.tasks.pte_swap_entry` and indexed once per kernel.
"""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Optional, Tuple

from ..kernel import Kernel
from ..memmap import memmap_of
from ..owner import Owner, register
from ..page import Page, decoder_of
from ..target import FaultError
from .file import file_path, path_text
from .tasks import MAX_MAPPERS, is_kernel_ptr, mappers_text, pt_levels, pte_swap_entry, tasks_of

BITS_PER_XA_VALUE = 63
MAX_SWAPFILES_SHIFT = 5
SWP_TYPE_SHIFT = BITS_PER_XA_VALUE - MAX_SWAPFILES_SHIFT
SWP_OFFSET_MASK = (1 << SWP_TYPE_SHIFT) - 1


def in_swapcache(k: Kernel, head: Page) -> bool:
    """folio_test_swapcache(): PG_swapcache on a swap-backed folio (the bit
    is PG_owner_priv_1, which means other things on other folios)."""
    d = decoder_of(k)
    return d.test(head.flags, "PG_swapcache") and d.test(head.flags, "PG_swapbacked")


def swap_entry(page: Page, head: Page) -> int:
    """The swp_entry_t value of ``page`` (the head's entry plus its place)."""
    return head.private + (page.pfn - head.pfn)


def swap_device(k: Kernel, swap_type: int) -> Optional[Dict[str, Any]]:
    """{"path", ...} of ``swap_info[type]->swap_file``, cached; None when the
    type has no swap_info."""
    memo = k.memo.setdefault("swap.dev", {})
    if swap_type in memo:  # type: ignore[operator]
        return memo[swap_type]  # type: ignore[index]
    info: Optional[Dict[str, Any]] = None
    nr_addr = k.sym_opt("nr_swapfiles")
    nr = k.u32(nr_addr) if nr_addr is not None else 1 << MAX_SWAPFILES_SHIFT
    if 0 <= swap_type < min(nr, 1 << MAX_SWAPFILES_SHIFT):
        si = k.u64(k.sym("swap_info") + 8 * swap_type)
        if is_kernel_ptr(si):
            S = "struct swap_info_struct"
            info = {"swap_info": si, "path": None, "max": k.u32(si + k.off(S, "max"))}
            file = k.u64(si + k.off(S, "swap_file"))
            if is_kernel_ptr(file):
                try:
                    p = file_path(k, file)
                    info["path"] = path_text(p)
                    if p["mounted"] and p["path"].startswith("/dev/"):
                        info["dev"] = p["path"][5:]
                except FaultError:
                    pass
    memo[swap_type] = info  # type: ignore[index]
    return info


def swap_detail(k: Kernel, page: Page, head: Page) -> Dict[str, Any]:
    """{"type", "offset", "entry", "device", ...} of a swap-cache page."""
    val = swap_entry(page, head)
    swap_type = val >> SWP_TYPE_SHIFT
    offset = val & SWP_OFFSET_MASK
    out: Dict[str, Any] = {"entry": val, "type": swap_type, "offset": offset}
    dev = swap_device(k, swap_type)
    if dev is None:
        out["device"] = None
        out["note"] = "no swap device of type %d" % swap_type
        return out
    out["device"] = dev["path"]
    if dev.get("dev"):
        out["dev"] = dev["dev"]
    if offset >= dev["max"]:
        out["note"] = "offset %d beyond the device's %d slots" % (offset, dev["max"])
    return out


def swap_text(sw: Dict[str, Any]) -> str:
    return "swap %s slot %d" % (sw["device"] or "type %d" % sw["type"], sw["offset"])


#: most page tables read to index the swap entries of every process
MAX_SWAP_INDEX_TABLES = 1 << 16
_PRESENT = 1
_PSE = 1 << 7
_ADDR_MASK = 0x000FFFFFFFFFF000


def swap_pte_index(k: Kernel) -> Dict[Tuple[int, int], List[Tuple[int, int]]]:
    """(swap type, offset) -> [(mm, vaddr)] of every swap entry in every
    live process's page tables, built once per kernel (every user page table
    down to the PTEs is read, at most MAX_SWAP_INDEX_TABLES of them).

    Used for swap-cache pages that no anon_vma names yet (swap readahead,
    or an anon page being swapped out): the processes whose PTEs hold the
    page's swap entry are its owners.  Shmem pages keep their swap entries
    in the shmem mapping instead, so they are not found here.
    """
    memo = k.memo.get("swap.pte_index")
    if memo is not None:
        return memo  # type: ignore[return-value]
    index: Dict[Tuple[int, int], List[Tuple[int, int]]] = {}
    levels = pt_levels(k)
    mm_ = memmap_of(k)
    nr_addr = k.sym_opt("nr_swapfiles")
    nr_swap = k.u32(nr_addr) if nr_addr is not None else 1 << MAX_SWAPFILES_SHIFT
    budget = [MAX_SWAP_INDEX_TABLES]
    o_pgd = k.off("struct mm_struct", "pgd")

    def walk(mm: int, table_pfn: int, level: int, base: int, last: int) -> None:
        if budget[0] <= 0 or not mm_.valid(table_pfn):
            return
        budget[0] -= 1
        try:
            entries = struct.unpack("<512Q", k.read(k.pfn_to_virt(table_pfn), 4096))
        except FaultError:
            return
        shift = 12 + 9 * (level - 1)
        for i in range(last + 1):
            e = entries[i]
            if not e:
                continue
            vaddr = base + (i << shift)
            leaf = level == 1 or (level in (2, 3) and e & _PSE)
            if e & _PRESENT:
                if not leaf:
                    walk(mm, (e & _ADDR_MASK) >> 12, level - 1, vaddr, 511)
            elif leaf and not e & (1 << 8):  # not PROT_NONE: a swap-type entry
                swap_type, offset = pte_swap_entry(e)
                if swap_type < nr_swap:
                    index.setdefault((swap_type, offset), []).append((mm, vaddr))

    for mm in list(tasks_of(k).by_mm):
        try:
            pgd_pfn = k.virt_to_pfn(k.u64(mm + o_pgd))
        except FaultError:
            continue
        if pgd_pfn is not None:
            walk(mm, pgd_pfn, levels, 0, 255)
    k.memo["swap.pte_index"] = index
    return index


@register("swapcache")
def name_swapcache(k: Kernel, page: Page, head: Page, owner: Owner) -> None:
    sw = swap_detail(k, page, head)
    det = owner.detail
    det["swap"] = sw
    d = decoder_of(k)
    state = [s for s, f in (("dirty", "PG_dirty"), ("writeback", "PG_writeback"), ("uptodate", "PG_uptodate"))
             if d.test(head.flags, f)]
    found: List[Dict[str, object]] = []
    for mm, vaddr in swap_pte_index(k).get((sw["type"], sw["offset"]), []):
        for t in tasks_of(k).processes(mm):
            found.append({"pid": t.tgid, "comm": t.comm, "vaddr": vaddr, "verified": True,
                          "mm": mm, "pte": "swapped"})
    det["mappers"] = found[:MAX_MAPPERS]
    det["nr_mappers"] = len(found)
    text = swap_text(sw) + (", " + "+".join(state) if state else "")
    if found:
        text += "; swapped out of " + mappers_text(found)
    else:
        text += "; in no process's page tables (swap readahead, or a shmem page)"
    if sw.get("note"):
        text += "; " + sw["note"]
    det["summary"] = text
