"""Small helpers the kernel-side namers share: bounded list walks, per-cpu
offsets, pointer sanity, array reads and kernel page-table range walks.

Every walk here is bounded (a maximum count and a visited set), so a
corrupt or looping list costs a bounded number of reads and never hangs the
debugger.
"""

from __future__ import annotations

import struct
from typing import Dict, Iterator, List, Optional, Tuple

from ..kernel import Kernel
from ..target import FaultError
from ..text import clean

#: default bound of a list walk
MAX_LIST = 1 << 20


def is_kernel_ptr(value: int) -> bool:
    """A canonical upper-half x86-64 address (not NULL, not a poison value)."""
    return value >= 0xFFFF800000000000 and value >> 48 != 0xDEAD and value & 7 == 0


def u64s(k: Kernel, address: int, count: int) -> Tuple[int, ...]:
    """``count`` little-endian u64 words at ``address``, in one read."""
    if count <= 0:
        return ()
    return struct.unpack("<%dQ" % count, k.read(address, 8 * count))


def list_nodes(k: Kernel, head: int, limit: int = MAX_LIST) -> Iterator[int]:
    """Addresses of the list_head nodes of the list at ``head`` (not ``head``
    itself), following ``next``.

    Stops at ``head``, after ``limit`` nodes, at a repeat, at a non-pointer,
    and at a node whose ``prev`` does not point back at the node before it:
    a list_head that is not doubly linked is corrupt (or garbage), and
    following it further would only read nonsense.
    """
    seen = {head}
    last = head
    node = k.u64(head)
    n = 0
    while node != head and n < limit:
        if node in seen or not is_kernel_ptr(node):
            return
        raw = k.read(node, 16)
        nxt, prev = struct.unpack("<QQ", raw)
        if prev != last:
            return
        seen.add(node)
        yield node
        n += 1
        last = node
        node = nxt


def possible_cpus(k: Kernel) -> List[int]:
    """The possible cpus: ``__cpu_possible_mask`` bits below nr_cpu_ids."""
    memo = k.memo.get("kutil.cpus")
    if memo is not None:
        return memo  # type: ignore[return-value]
    nr_addr = k.sym_opt("nr_cpu_ids")
    nr = k.u32(nr_addr) if nr_addr is not None else 1
    nr = max(1, min(nr, 8192))
    cpus = list(range(nr))
    mask_addr = k.sym_opt("__cpu_possible_mask")
    if mask_addr is not None:
        try:
            words = u64s(k, mask_addr, (nr + 63) // 64)
            cpus = [c for c in range(nr) if words[c // 64] >> (c % 64) & 1]
        except FaultError:
            pass
    k.memo["kutil.cpus"] = cpus
    return cpus


def percpu_offsets(k: Kernel) -> Dict[int, int]:
    """cpu -> ``__per_cpu_offset[cpu]`` for the possible cpus (SMP kernels);
    {0: 0} on a kernel without ``__per_cpu_offset``."""
    memo = k.memo.get("kutil.pcpu")
    if memo is not None:
        return memo  # type: ignore[return-value]
    cpus = possible_cpus(k)
    addr = k.sym_opt("__per_cpu_offset")
    if addr is None:
        out = {0: 0}
    else:
        offs = u64s(k, addr, max(cpus) + 1)
        out = {c: offs[c] for c in cpus}
    k.memo["kutil.pcpu"] = out
    return out


def container_pfn(k: Kernel, node: int, member_off: int) -> Optional[int]:
    """pfn of the struct page whose member at ``member_off`` is at ``node``."""
    return k.page_to_pfn(node - member_off)


def cstr(k: Kernel, address: int, limit: int = 64) -> Optional[str]:
    """A C string from the kernel as safe text (control characters and
    invalid bytes escaped by text.clean), or None for NULL / unreadable."""
    if not is_kernel_ptr(address) and address < 0xFFFF800000000000:
        return None
    try:
        return clean(k.cstring(address, limit))
    except FaultError:
        return None


# -- kernel page tables (x86-64, 4 or 5 levels) -------------------------------

_PRESENT = 1
_PSE = 1 << 7
_ADDR = 0x000FFFFFFFFFF000


def _top_table(k: Kernel) -> Optional[int]:
    top = k.sym_opt("init_top_pgt")
    if top is None:
        top = k.sym_opt("swapper_pg_dir")
    if top is None:
        return None
    pfn = k.virt_to_pfn(top)
    return None if pfn is None else pfn << k.page_shift


def map_range(k: Kernel, start: int, end: int, limit: int = 1 << 22) -> Iterator[Tuple[int, int]]:
    """(vaddr, pfn) of every mapped 4 KiB page of kernel virtual [start, end),
    reading each page table once (whole tables per read).  Huge mappings
    yield each of their 4 KiB pages.  At most ``limit`` pairs."""
    top = _top_table(k)
    if top is None:
        return
    levels = 5 if k.number("pgtable_l5_enabled") else 4
    count = [0]
    # walk with addresses as unsigned 48/57-bit offsets into the top table;
    # canon() sign-extends them back (vmalloc and vmemmap are upper half)
    bits = 12 + 9 * levels
    mask = (1 << bits) - 1
    start, end = start & mask, ((end - 1) & mask) + 1

    from ..memmap import memmap_of

    valid = memmap_of(k).valid

    def canon(v: int) -> int:
        return v | ((1 << 64) - (1 << bits)) if v >> (bits - 1) & 1 else v

    def walk(table: int, level: int, base: int) -> Iterator[Tuple[int, int]]:
        shift = 12 + 9 * (level - 1)
        span = 1 << shift
        # the index range of this table that overlaps [start, end)
        lo = max(start, base)
        hi = min(end, base + (span << 9))
        if lo >= hi:
            return
        first = (lo - base) >> shift
        last = (hi - 1 - base) >> shift
        try:
            entries = u64s(k, k.page_offset + table + first * 8, last - first + 1)
        except FaultError:
            return
        for i, entry in enumerate(entries, first):
            if count[0] >= limit:
                return
            if not entry & _PRESENT:
                continue
            vbase = base + i * span
            if level == 1 or (level in (2, 3) and entry & _PSE):
                phys = entry & _ADDR & ~(span - 1)
                a = max(vbase, start)
                b = min(vbase + span, end)
                v = a & ~0xFFF
                while v < b and count[0] < limit:
                    count[0] += 1
                    yield canon(v), (phys + (v - vbase)) >> 12
                    v += 4096
                continue
            table_pfn = (entry & _ADDR) >> 12
            if not valid(table_pfn):
                continue  # a table outside RAM: corrupt entry
            yield from walk(entry & _ADDR, level - 1, vbase)

    yield from walk(top, levels, 0)
