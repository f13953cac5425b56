"""Tasks and their address spaces, learned once per kernel.

Shared by the user-memory namers (anon, KSM, page cache, page tables): one
bounded walk of every task builds mm -> processes, cached in ``k.memo``.

The task list (include/linux/sched/signal.h, kernel/fork.c): thread-group
leaders are on ``init_task.tasks``; the threads of a group are on
``task->signal->thread_head`` linked through ``task->thread_node`` (v3.14+,
every kernel pagewho supports).  Threads share the leader's mm, so the
answer names processes (tgid, leader's comm) and counts threads.

Also the bounded walkers of the kernel's generic containers (list_head,
hlist, rb-tree) the user-memory namers share, and a user page-table lookup.
"""

from __future__ import annotations

import struct
from typing import Dict, Iterator, List, Optional, Set, Tuple

from ..kernel import Kernel
from ..target import FaultError
from ..text import clean

#: bounds of the walks: more tasks / list nodes than this is a corrupt dump
MAX_TASKS = 1 << 17
MAX_THREADS = 1 << 15
MAX_NODES = 1 << 17

_U64 = struct.Struct("<Q")
_S32 = struct.Struct("<i")


def is_kernel_ptr(value: int) -> bool:
    """A plausible kernel pointer: canonical upper half, not a poison value."""
    return value >= 0xFFFF800000000000 and value >> 48 != 0xDEAD


# -- generic containers ---------------------------------------------------------

def list_nodes(k: Kernel, head: int, limit: int = MAX_NODES) -> Iterator[int]:
    """The list_head nodes of the list at ``head`` (``head`` excluded);
    stops at ``head``, a repeat, a non-pointer, or ``limit`` nodes."""
    seen = {head}
    node = k.u64(head)
    n = 0
    while node != head and n < limit:
        if node in seen or not is_kernel_ptr(node):
            return
        seen.add(node)
        yield node
        n += 1
        node = k.u64(node)


def hlist_nodes(k: Kernel, head: int, limit: int = MAX_NODES) -> Iterator[int]:
    """The hlist_node addresses of the hlist_head at ``head`` (bounded).
    Stops at a node whose ``pprev`` does not point back at the pointer that
    led to it: corrupt, or not an hlist (a garbage head inside the memmap
    would otherwise follow struct page lru chains for ``limit`` nodes)."""
    seen: Set[int] = set()
    link = head  # the address of the pointer that leads to node
    node = k.u64(head)
    while node and len(seen) < limit:
        if node in seen or not is_kernel_ptr(node):
            return
        nxt, pprev = k.u64(node), k.u64(node + 8)  # hlist_node: next, pprev
        if pprev != link:
            return
        seen.add(node)
        yield node
        link, node = node, nxt


def rb_nodes(k: Kernel, root: int, limit: int = MAX_NODES) -> Iterator[int]:
    """Every rb_node of the tree whose ``struct rb_root`` is at ``root``
    (pre-order, with an explicit stack; bounded, each node visited once).
    A node whose parent pointer does not name the node it was reached from
    ends that branch: corrupt, or not a tree at all (a garbage root would
    otherwise send the walk through up to ``limit`` pointers)."""
    right = k.off("struct rb_node", "rb_right")
    left = k.off("struct rb_node", "rb_left")
    parent_off = k.off("struct rb_node", "__rb_parent_color")
    first = k.u64(root)
    stack = [(first, 0)] if first else []
    seen: Set[int] = set()
    while stack and len(seen) < limit:
        node, parent = stack.pop()
        if node in seen or not is_kernel_ptr(node):
            continue
        if k.u64(node + parent_off) & ~3 != parent:
            continue
        seen.add(node)
        yield node
        r = k.u64(node + right)
        lft = k.u64(node + left)
        if r:
            stack.append((r, node))
        if lft:
            stack.append((lft, node))


# -- tasks --------------------------------------------------------------------

class Task:
    """One task: pid, tgid, comm (cleaned text), mm, and its address."""

    __slots__ = ("address", "pid", "tgid", "comm", "mm")

    def __init__(self, address: int, pid: int, tgid: int, comm: str, mm: int) -> None:
        self.address = address
        self.pid = pid
        self.tgid = tgid
        self.comm = comm
        self.mm = mm

    def __repr__(self) -> str:
        return "Task(%d, %r)" % (self.pid, self.comm)


class Tasks:
    """All tasks of a kernel and the mm -> processes index."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.tasks: List[Task] = []
        #: mm -> thread-group leaders (one per process) using it
        self.by_mm: Dict[int, List[Task]] = {}
        #: mm -> number of threads using it
        self.threads_of_mm: Dict[int, int] = {}
        #: True when some task could not be read (a filtered or damaged dump)
        self.truncated = False
        self._walk()

    def _layout(self) -> Tuple[int, int, int, int, int, int, int]:
        k = self.k
        T = "struct task_struct"
        return (k.off(T, "tasks"), k.off(T, "pid"), k.off(T, "tgid"), k.off(T, "comm"),
                k.off(T, "mm"), k.off(T, "signal"), k.off(T, "thread_node"))

    def _read_task(self, addr: int) -> Task:
        k = self.k
        _, o_pid, o_tgid, o_comm, o_mm, _, _ = self.layout
        lo = min(o_pid, o_tgid, o_comm, o_mm)
        hi = max(o_pid + 4, o_tgid + 4, o_comm + 16, o_mm + 8)
        buf = k.read(addr + lo, hi - lo)
        pid = _S32.unpack_from(buf, o_pid - lo)[0]
        tgid = _S32.unpack_from(buf, o_tgid - lo)[0]
        raw = buf[o_comm - lo:o_comm - lo + 16]
        comm = clean(raw.split(b"\0", 1)[0])
        mm = _U64.unpack_from(buf, o_mm - lo)[0]
        return Task(addr, pid, tgid, comm, mm)

    def _walk(self) -> None:
        k = self.k
        self.layout = self._layout()
        o_tasks, _, _, _, _, o_signal, o_thread_node = self.layout
        o_thread_head = k.off("struct signal_struct", "thread_head")
        init = k.sym("init_task")
        leaders = [init] + [node - o_tasks for node in self._both_ways(init + o_tasks)]
        seen: Set[int] = set()
        for leader in leaders:
            members = [leader]
            try:
                signal = k.u64(leader + o_signal)
                if is_kernel_ptr(signal):
                    for node in list_nodes(k, signal + o_thread_head, MAX_THREADS):
                        members.append(node - o_thread_node)
            except FaultError:
                pass
            for addr in members:
                if addr in seen:
                    continue
                seen.add(addr)
                try:
                    t = self._read_task(addr)
                except FaultError:
                    self.truncated = True
                    continue
                self.tasks.append(t)
                if not t.mm:
                    continue
                self.threads_of_mm[t.mm] = self.threads_of_mm.get(t.mm, 0) + 1
                procs = self.by_mm.setdefault(t.mm, [])
                # the leader (first of its group) names the process; a thread
                # whose leader has another mm (or none) names its own
                if not any(p.tgid == t.tgid for p in procs):
                    procs.append(t)

    def _both_ways(self, head: int) -> List[int]:
        """The nodes of the task list at ``head``: forwards until the end or
        an unreadable task, then backwards (``prev``) to pick up the tasks
        beyond it, so one task missing from a filtered dump costs only that
        task.  Sets ``truncated`` when a task could not be read."""
        k = self.k
        nodes: List[int] = []
        try:
            for node in list_nodes(k, head, MAX_TASKS):
                nodes.append(node)
            return nodes
        except FaultError:
            self.truncated = True
        seen = set(nodes)
        seen.add(head)
        back: List[int] = []
        try:
            node = k.u64(head + 8)  # list_head.prev
            while node not in seen and is_kernel_ptr(node) and len(back) < MAX_TASKS:
                back.append(node)
                seen.add(node)
                node = k.u64(node + 8)
        except FaultError:
            pass
        back.reverse()
        return nodes + back

    def processes(self, mm: int) -> List[Task]:
        """The processes (one Task per tgid) whose tasks use ``mm``."""
        return self.by_mm.get(mm, [])


def tasks_of(k: Kernel) -> Tasks:
    """The :class:`Tasks` of a kernel, walked once and kept in ``k.memo``."""
    return k.once("user.tasks", Tasks)


def proc_dicts(k: Kernel, mm: int) -> List[Dict[str, object]]:
    """[{"pid", "comm"}] of the processes using ``mm`` (JSON-ready)."""
    return [{"pid": t.tgid, "comm": t.comm} for t in tasks_of(k).processes(mm)]


def procs_text(procs: List[Dict[str, object]]) -> str:
    """"pid 12 (comm), pid 13 (comm)" -- comm is already cleaned text."""
    if not procs:
        return "no live process"
    return ", ".join("pid %s (%s)" % (p["pid"], clean(str(p["comm"]))) for p in procs)


# -- user page tables (x86-64) ---------------------------------------------------

_PRESENT = 1 << 0
_PSE = 1 << 7
_ADDR_MASK = 0x000FFFFFFFFFF000


def pt_levels(k: Kernel) -> int:
    """4, or 5 with 5-level paging (VMCOREINFO NUMBER(pgtable_l5_enabled))."""
    return 5 if k.number("pgtable_l5_enabled") else 4


_PROTNONE = 1 << 8  # a PROT_NONE leaf keeps its pfn (pte_present())

#: what a user page-table lookup found
MAPPED, NOTHING, SWAPPED, UNREADABLE = "mapped", "nothing", "swapped", "unreadable"
UNCHECKED = "unchecked"


def user_lookup(k: Kernel, mm: int, vaddr: int) -> Tuple[str, Optional[int]]:
    """(state, value) of ``vaddr`` in ``mm``'s page tables: MAPPED with the
    pfn; NOTHING when an entry on the way is empty (never faulted in, or
    unmapped); SWAPPED with the raw entry when the leaf holds a non-present
    entry (swap or migration entry, see :func:`pte_swap_entry`); UNREADABLE
    when a table is not in the dump.  Tables are read through the direct
    map."""
    try:
        pgd = k.u64(mm + k.off("struct mm_struct", "pgd"))
        table_pfn = k.virt_to_pfn(pgd)
        if table_pfn is None:
            return UNREADABLE, None
        table = table_pfn << k.page_shift
        levels = pt_levels(k)
        shift = 12 + 9 * (levels - 1)
        for level in range(levels, 0, -1):
            entry = k.u64(k.page_offset + table + ((vaddr >> shift) & 0x1FF) * 8)
            leaf = level == 1 or (level in (2, 3) and entry & _PSE)
            if not entry & (_PRESENT | (_PROTNONE if leaf else 0)):
                return (SWAPPED, entry) if leaf and entry else (NOTHING, None)
            if leaf:
                base = entry & _ADDR_MASK & ~((1 << shift) - 1)
                return MAPPED, (base + (vaddr & ((1 << shift) - 1))) >> k.page_shift
            table = entry & _ADDR_MASK
            shift -= 9
    except FaultError:
        pass
    return UNREADABLE, None


#: arch/x86/include/asm/pgtable_64.h (v4.19+, "x86/speculation/l1tf: Protect
#: swap entries against L1TF"): the type in the top SWP_TYPE_BITS bits, the
#: offset stored inverted from bit SWP_OFFSET_FIRST_BIT (_PAGE_BIT_PROTNONE + 1)
_SWP_TYPE_BITS = 5
_SWP_OFFSET_SHIFT = 9 + _SWP_TYPE_BITS
_U64_MASK = (1 << 64) - 1


def pte_swap_entry(raw: int) -> Tuple[int, int]:
    """(type, offset) of a non-present x86-64 PTE holding a swap entry
    (__swp_type/__swp_offset; the flag bits below bit 9 -- soft-dirty,
    exclusive, uffd-wp -- drop out).  Migration and other special entries
    decode to types at or beyond the swap files' (MAX_SWAPFILES)."""
    return raw >> (64 - _SWP_TYPE_BITS), ((~raw << _SWP_TYPE_BITS) & _U64_MASK) >> _SWP_OFFSET_SHIFT


def user_vaddr_to_pfn(k: Kernel, mm: int, vaddr: int) -> Optional[int]:
    """The pfn ``vaddr`` maps to in ``mm``, or None (see :func:`user_lookup`)."""
    state, pfn = user_lookup(k, mm, vaddr)
    return pfn if state == MAPPED else None


# -- reverse map: vmas that may map a page ------------------------------------------

#: how many mappers an answer lists (the count is always complete)
MAX_MAPPERS = 64
#: how many candidate mappings are checked in the page tables per answer
MAX_VERIFY = 1024


class Vma:
    """The fields of a vm_area_struct the reverse map needs."""

    __slots__ = ("address", "start", "end", "mm", "pgoff")

    def __init__(self, k: Kernel, address: int) -> None:
        V = "struct vm_area_struct"
        self.address = address
        self.start = k.u64(address + k.off(V, "vm_start"))
        self.end = k.u64(address + k.off(V, "vm_end"))
        self.mm = k.u64(address + k.off(V, "vm_mm"))
        self.pgoff = k.u64(address + k.off(V, "vm_pgoff"))

    def vaddr_of(self, k: Kernel, pgoff: int) -> Optional[int]:
        """Where page ``pgoff`` (of the file or anon_vma) sits in this vma,
        or None when the vma does not cover it."""
        if pgoff < self.pgoff:
            return None
        vaddr = self.start + ((pgoff - self.pgoff) << k.page_shift)
        if not self.start <= vaddr < self.end:
            return None
        return vaddr


def pte_verifies(state: str, value: Optional[int], pfn: int, swap: Optional[Tuple[int, int]]) -> Optional[bool]:
    """Whether a page-table lookup (:func:`user_lookup`) confirms that the
    mapping holds ``pfn``: True, False (cannot tell), or None (it holds
    something else: rule the candidate out)."""
    if state == MAPPED:
        return True if value == pfn else None
    if state == NOTHING:
        return None
    if state == SWAPPED and swap is not None and value is not None:
        got = pte_swap_entry(value)
        if got == swap:
            return True
        if got[0] == swap[0]:  # another slot of the same swap device
            return None
    return False


def region_of(k: Kernel, vma: Vma, vaddr: int) -> Optional[str]:
    """What an anon page's vma is, for people: "[heap]" (between the mm's
    start_brk and brk), "[stack]" (the vma holding start_stack), the path of
    a private file mapping (a copied-on-write page of it), or None for a
    plain anonymous mapping."""
    M = "struct mm_struct"
    try:
        file = k.u64(vma.address + k.off("struct vm_area_struct", "vm_file"))
        if is_kernel_ptr(file):
            from .file import file_path, path_text

            return path_text(file_path(k, file))
        if k.u64(vma.mm + k.off(M, "start_brk")) <= vaddr < k.u64(vma.mm + k.off(M, "brk")):
            return "[heap]"
        if vma.start <= k.u64(vma.mm + k.off(M, "start_stack")) < vma.end:
            return "[stack]"
    except FaultError:
        pass
    return None


def mappers(k: Kernel, vmas: Iterator[int], pgoff: int, pfn: int, regions: bool = False,
            swap: Optional[Tuple[int, int]] = None) -> Tuple[List[Dict[str, object]], int]:
    """The processes that map ``pfn`` through the candidate ``vmas``.

    Each vma covering ``pgoff`` gives a candidate (mm, vaddr); its page
    tables are then checked: a PTE mapping ``pfn`` makes it "verified"; a
    PTE mapping another pfn (a COW copy, or a private file page replaced by
    an anon one) or no entry at all (a forked child that never touched the
    address) rules it out; a swap entry or unreadable tables leave it a
    candidate.

    With ``regions`` each mapper also gets "region" (:func:`region_of`).
    With ``swap`` (the page's swap (type, offset), when it is in the swap
    cache) a PTE holding that swap entry verifies the mapping too, and one
    holding another swap slot rules it out.

    Returns (mappers, ruled_out) with mappers as JSON-ready dicts
    {"pid", "comm", "vaddr", "verified", "mm"}, verified ones first (all of
    them: callers list at most MAX_MAPPERS).
    """
    found: List[Dict[str, object]] = []
    ruled_out = 0
    seen: Set[Tuple[int, int]] = set()
    for vma_addr in vmas:
        if not is_kernel_ptr(vma_addr):
            continue
        try:
            vma = Vma(k, vma_addr)
        except FaultError:
            continue
        vaddr = vma.vaddr_of(k, pgoff)
        if vaddr is None or (vma.mm, vaddr) in seen:
            continue
        seen.add((vma.mm, vaddr))
        if len(seen) <= MAX_VERIFY:
            state, mapped = user_lookup(k, vma.mm, vaddr)
        else:  # a file mapped by thousands: list the rest unchecked
            state, mapped = UNCHECKED, None
        verified = pte_verifies(state, mapped, pfn, swap)
        if verified is None:
            ruled_out += 1
            continue
        procs = tasks_of(k).processes(vma.mm) or [Task(0, -1, -1, "", vma.mm)]
        region = region_of(k, vma, vaddr) if regions else None
        for t in procs:
            m = {"pid": t.tgid if t.tgid >= 0 else None, "comm": t.comm or None,
                 "vaddr": vaddr, "verified": verified, "mm": vma.mm, "pte": state}
            if regions:
                m["region"] = region
            found.append(m)
    found.sort(key=lambda m: (not m["verified"], m["pid"] is None, m["pid"] or 0, m["vaddr"]))
    return found, ruled_out


_UNVERIFIED = {SWAPPED: " (swap entry)", UNREADABLE: " (page tables not in the dump)", UNCHECKED: " (unchecked)"}


def _marker(m: Dict[str, object]) -> str:
    if m.get("pte") == SWAPPED:
        return " (swap entry)" if m["verified"] else " (swap entry?)"
    if m["verified"]:
        return ""
    return _UNVERIFIED.get(str(m.get("pte")), " (candidate)")


def mappers_text(found: List[Dict[str, object]], limit: int = 4, per_process: int = 3) -> str:
    """"pid 12 (comm) at 0x7f..., pid 13 (comm) at 0x7f..." for a summary
    line: mappers grouped by process, at most ``limit`` processes and
    ``per_process`` addresses each; unverified addresses are marked."""
    groups: Dict[Tuple[object, object, object], List[Dict[str, object]]] = {}
    for m in found:
        key = (m["pid"], m["comm"], m["mm"] if m["pid"] is None else None)
        groups.setdefault(key, []).append(m)
    parts = []
    for (pid, comm, mm), ms in list(groups.items())[:limit]:
        who = "mm %#x (no task)" % mm if pid is None else "pid %s (%s)" % (pid, clean(str(comm)))
        addrs = ["%#x%s" % (m["vaddr"], _marker(m)) for m in ms[:per_process]]
        if len(ms) > per_process:
            addrs.append("+%d more" % (len(ms) - per_process))
        parts.append("%s at %s" % (who, ", ".join(addrs)))
    if len(groups) > limit:
        parts.append("+%d more processes" % (len(groups) - limit))
    return "; ".join(parts) if len(parts) > 1 and len(groups) > 1 and any(
        len(g) > 1 for g in groups.values()) else ", ".join(parts)


def unnamed_note(k: Kernel, found: List[Dict[str, object]]) -> Optional[str]:
    """A note for mappers whose mm no task was found for, or None."""
    mms = sorted({m["mm"] for m in found if m["pid"] is None})  # type: ignore[type-var]
    if not mms:
        return None
    why = ("some tasks are not in the dump" if tasks_of(k).truncated
           else "no live task uses it (an exiting process, or a kernel-held mm)")
    return "no process named for mm %s: %s" % (", ".join("%#x" % m for m in mms), why)  # type: ignore[str-format]

