"""vmalloc areas, kernel stacks and per-cpu chunks.

A vmalloc'd page has no mark in its struct page (refcount 1, no mapping),
so the struct page alone leaves it "unknown".  This module builds, once per
kernel, an index from pfn to the vmap area whose ``vm_struct`` maps it:

* vmap areas: the global ``vmap_area_list`` (up to v6.8), or the ``busy``
  lists of ``vmap_nodes[0 .. nr_vmap_nodes)`` since v6.9 ("mm: vmalloc:
  remove global vmap_area_root rb-tree");
* each area's ``vm_struct`` (``va->vm``): ``addr``, ``size``, ``flags``,
  ``pages[nr_pages]`` (read in one go) and ``caller``;
* areas without a ``pages`` array (per-cpu chunks from
  ``pcpu_get_vm_areas``, ``vmap()`` of foreign pages, ioremap) are resolved
  through the kernel page tables, bounded.

An area that is some task's ``task_struct.stack`` is a kernel stack
(CONFIG_VMAP_STACK); tasks come from ``init_task.tasks`` and each process's
``signal->thread_head`` list (``thread_node``, v3.14+), plus the per-cpu
idle threads (``idle_threads``).  Areas made by the per-cpu allocator are
"percpu".

Checked on v5.10, v6.1, v6.12 and v7.x Debian cloud kernels.
"""

from __future__ import annotations

import bisect
from typing import Any, Dict, List, Optional, Tuple

from ..kernel import Kernel
from ..owner import Owner, register
from ..page import Page
from ..target import FaultError, TargetError
from ..text import clean
from .kutil import is_kernel_ptr, list_nodes, map_range, percpu_offsets, u64s

MAX_AREAS = 1 << 20
MAX_TASKS = 1 << 18
MAX_PT_PAGES = 1 << 19  # pages found through page tables, all areas together

# vm_struct.flags, include/linux/vmalloc.h (stable since v5.x)
VM_IOREMAP = 0x1
VM_ALLOC = 0x2
VM_MAP = 0x4
VM_USERMAP = 0x8

#: callers that allocate kernel stacks (alloc_thread_stack_node is often
#: inlined into dup_task_struct/copy_process/kernel_clone)
STACK_CALLERS = ("alloc_thread_stack_node", "dup_task_struct", "copy_process", "kernel_clone", "_do_fork",
                 "fork_idle")


#: callers that allocate module memory (module_alloc up to v6.9, execmem_* since)
MODULE_CALLERS = ("load_module", "move_module", "module_alloc", "execmem_", "module_memory_alloc")
MAX_MODULES = 1 << 14


def _module_ranges(k: Kernel) -> List[Tuple[int, int, str]]:
    """(start, end, name) of every module's memory: ``mod->mem[]`` since
    v6.4 ("module: introduce module_memory"), ``core_layout`` and
    ``init_layout`` before.  One bounded walk of the ``modules`` list."""
    return k.once("vmalloc.modules", _walk_modules)


def _walk_modules(k: Kernel) -> List[Tuple[int, int, str]]:
    out: List[Tuple[int, int, str]] = []
    head = k.sym_opt("modules")
    M = "struct module"
    if head is not None and k.sizeof_opt(M):
        off_list, off_name = k.off(M, "list"), k.off(M, "name")
        regions: List[Tuple[int, int]] = []  # (offset of base, offset of size) in struct module
        off_mem = k.off_opt(M, "mem")
        if off_mem is not None:
            mm_size = k.sizeof("struct module_memory")
            n = (k.member_size(M, "mem") or 0) // mm_size
            ob, os_ = k.off("struct module_memory", "base"), k.off("struct module_memory", "size")
            regions = [(off_mem + i * mm_size + ob, off_mem + i * mm_size + os_) for i in range(n)]
        else:
            for layout in ("core_layout", "init_layout"):
                ob = k.off_opt(M, layout + ".base")
                os_ = k.off_opt(M, layout + ".size")
                if ob is not None and os_ is not None:
                    regions.append((ob, os_))
        for node in list_nodes(k, head, MAX_MODULES):
            mod = node - off_list
            try:
                name = clean(k.cstring(mod + off_name, 56))
                for ob, os_ in regions:
                    base = k.u64(mod + ob)
                    size = k.u32(mod + os_)  # unsigned int in every version
                    if base and size:
                        out.append((base, base + size, name))
            except FaultError:
                continue
    return out


def module_of(k: Kernel, addr: int) -> Optional[str]:
    """The name of the module whose memory holds ``addr``, or None."""
    for start, end, name in _module_ranges(k):
        if start <= addr < end:
            return name
    return None


class Area:
    """One vmap area and its vm_struct."""

    __slots__ = ("va", "start", "end", "vm", "addr", "size", "flags", "nr_pages", "caller",
                 "caller_name", "pages")

    def __init__(self, va: int, start: int, end: int) -> None:
        self.va = va
        self.start = start
        self.end = end
        self.vm = 0
        self.addr = start
        self.size = end - start
        self.flags = 0
        self.nr_pages = 0
        self.caller = 0
        self.caller_name: Optional[str] = None
        self.pages = 0

    def kind_hint(self) -> str:
        name = (self.caller_name or "").split("+")[0]
        if name.startswith("pcpu_"):
            return "percpu"
        if name in STACK_CALLERS:
            return "kstack"
        if name.startswith(MODULE_CALLERS):
            return "module"
        return "vmalloc"


def _vmap_lists(k: Kernel) -> List[int]:
    """Addresses of the list heads that link every busy vmap area."""
    addr = k.sym_opt("vmap_area_list")
    if addr is not None:
        return [addr]
    if k.sizeof_opt("struct vmap_node") is None:
        return []
    size = k.sizeof("struct vmap_node")
    busy_head = k.off("struct vmap_node", "busy.head")
    nodes_sym = k.sym_opt("vmap_nodes")
    if nodes_sym is not None:
        base = k.u64(nodes_sym)
    else:
        base = k.sym("single")  # !SMP: vmap_nodes = &single
    nr_sym = k.sym_opt("nr_vmap_nodes")
    nr = k.u32(nr_sym) if nr_sym is not None else 1
    nr = max(1, min(nr, 4096))
    return [base + i * size + busy_head for i in range(nr)]


def areas(k: Kernel) -> List[Area]:
    """Every busy vmap area, sorted by start address; read once."""
    memo = k.memo.get("vmalloc.areas")
    if memo is not None:
        return memo  # type: ignore[return-value]
    VA = "struct vmap_area"
    VM = "struct vm_struct"
    off_list = k.off(VA, "list")
    off_start = k.off(VA, "va_start")
    off_end = k.off(VA, "va_end")
    off_vm = k.off(VA, "vm")
    vm_size = k.sizeof(VM)
    o_addr, o_size, o_flags = k.off(VM, "addr"), k.off(VM, "size"), k.off(VM, "flags")
    o_pages, o_nr, o_caller = k.off(VM, "pages"), k.off(VM, "nr_pages"), k.off(VM, "caller")
    va_size = k.sizeof(VA)
    nr_size = k.member_size(VM, "nr_pages") or 4  # unsigned int, unsigned long in 7.x
    out: List[Area] = []
    names: Dict[int, Optional[str]] = {}
    for head in _vmap_lists(k):
        try:
            for node in list_nodes(k, head, MAX_AREAS - len(out)):
                va = node - off_list
                raw = k.read(va, va_size)
                start = int.from_bytes(raw[off_start:off_start + 8], "little")
                end = int.from_bytes(raw[off_end:off_end + 8], "little")
                a = Area(va, start, end)
                vm = int.from_bytes(raw[off_vm:off_vm + 8], "little")
                if is_kernel_ptr(vm):
                    try:
                        v = k.read(vm, vm_size)
                    except FaultError:
                        v = None
                    if v is not None:
                        a.vm = vm
                        a.addr = int.from_bytes(v[o_addr:o_addr + 8], "little")
                        a.size = int.from_bytes(v[o_size:o_size + 8], "little")
                        a.flags = int.from_bytes(v[o_flags:o_flags + 8], "little")
                        a.nr_pages = int.from_bytes(v[o_nr:o_nr + nr_size], "little")
                        a.caller = int.from_bytes(v[o_caller:o_caller + 8], "little")
                        a.caller_name = _symbolize(k, names, a.caller)
                        a.pages = int.from_bytes(v[o_pages:o_pages + 8], "little")
                out.append(a)
        except FaultError:
            continue
    out.sort(key=lambda a: a.start)
    k.memo["vmalloc.areas"] = out
    return out


def _symbolize(k: Kernel, names: Dict[int, Optional[str]], caller: int) -> Optional[str]:
    """k.symbolize once per distinct caller (a debugger round trip under gdb)."""
    if not caller:
        return None
    if caller not in names:
        names[caller] = k.symbolize(caller)
    return names[caller]


def area_of_addr(k: Kernel, addr: int) -> Optional[Area]:
    """The vmap area containing kernel virtual address ``addr``."""
    al = areas(k)
    starts = k.memo.get("vmalloc.starts")
    if starts is None:
        starts = [a.start for a in al]
        k.memo["vmalloc.starts"] = starts
    i = bisect.bisect_right(starts, addr) - 1  # type: ignore[arg-type]
    if i >= 0 and al[i].start <= addr < al[i].end:
        return al[i]
    return None


def unmapped_address_note(k: Kernel, vaddr: int) -> str:
    """Why a kernel address has no page: " (guard page of the vmalloc area
    ... from caller)" when it falls in a vmap area, else ""."""
    try:
        a = area_of_addr(k, vaddr)
    except (FaultError, TargetError):
        return ""
    if a is None:
        return ""
    what = "guard page" if vaddr >= a.addr + a.size - k.page_size else "an unpopulated page"
    return " (%s of the vmalloc area %#x-%#x from %s)" % (what, a.addr, a.addr + a.size, a.caller_name or "?")


def _pfn_index(k: Kernel) -> Dict[int, Tuple[Area, int]]:
    """pfn -> (area, page index in the area)."""
    memo = k.memo.get("vmalloc.pfns")
    if memo is not None:
        return memo  # type: ignore[return-value]
    out: Dict[int, Tuple[Area, int]] = {}
    pt_budget = MAX_PT_PAGES
    for a in areas(k):
        pages = a.pages
        if not a.vm:
            # vm_map_ram() areas have no vm_struct; their pages are only
            # in the page tables
            if pt_budget > 0 and a.end - a.start <= 1 << 30:
                for vaddr, pfn in map_range(k, a.start, a.end, pt_budget):
                    pt_budget -= 1
                    out.setdefault(pfn, (a, (vaddr - a.start) >> k.page_shift))
            continue
        npages = a.size >> k.page_shift
        if pages and is_kernel_ptr(pages) and 0 < a.nr_pages <= npages:
            try:
                ptrs = u64s(k, pages, a.nr_pages)
            except FaultError:
                ptrs = ()
            for i, p in enumerate(ptrs):
                pfn = k.page_to_pfn(p)
                if pfn is not None:
                    out[pfn] = (a, i)
        elif not a.flags & VM_IOREMAP and pt_budget > 0:
            # no pages array: ask the page tables (per-cpu chunks, vmap())
            for vaddr, pfn in map_range(k, a.addr, a.addr + a.size, pt_budget):
                pt_budget -= 1
                out.setdefault(pfn, (a, (vaddr - a.addr) >> k.page_shift))
    k.memo["vmalloc.pfns"] = out
    return out


def area_of_pfn(k: Kernel, pfn: int) -> Optional[Tuple[Area, int]]:
    return _pfn_index(k).get(pfn)


# -- tasks and their stacks ------------------------------------------------------

def _tasks(k: Kernel) -> List[int]:
    """Addresses of every task_struct: init_task's list, their threads, and
    the per-cpu idle threads.  Bounded."""
    memo = k.memo.get("vmalloc.tasks")
    if memo is not None:
        return memo  # type: ignore[return-value]
    T = "struct task_struct"
    init = k.sym("init_task")
    off_tasks = k.off(T, "tasks")
    off_signal = k.off_opt(T, "signal")
    off_node = k.off_opt(T, "thread_node")
    off_head = k.off_opt("struct signal_struct", "thread_head")
    off_group = k.off_opt(T, "thread_group")
    seen = {init}
    out = [init]
    leaders = [init]
    for node in list_nodes(k, init + off_tasks, MAX_TASKS):
        leaders.append(node - off_tasks)
    for leader in leaders:
        if leader not in seen:
            seen.add(leader)
            out.append(leader)
        try:
            if off_signal is not None and off_node is not None and off_head is not None:
                sig = k.u64(leader + off_signal)
                if not is_kernel_ptr(sig):
                    continue
                threads = [n - off_node for n in list_nodes(k, sig + off_head, MAX_TASKS)]
            elif off_group is not None:
                threads = [n - off_group for n in list_nodes(k, leader + off_group, MAX_TASKS)]
            else:
                threads = []
        except FaultError:
            continue
        for t in threads:
            if t not in seen and len(out) < MAX_TASKS:
                seen.add(t)
                out.append(t)
    idle = k.sym_opt("idle_threads")
    if idle is not None:
        for off in percpu_offsets(k).values():
            try:
                t = k.u64((idle + off) & 0xFFFFFFFFFFFFFFFF)
            except FaultError:
                continue
            if is_kernel_ptr(t) and t not in seen:
                seen.add(t)
                out.append(t)
    k.memo["vmalloc.tasks"] = out
    return out


def task_ident(k: Kernel, task: int) -> Dict[str, Any]:
    T = "struct task_struct"
    pid = k.u32(task + k.off(T, "pid"))
    tgid = k.u32(task + k.off(T, "tgid"))
    comm = clean(k.cstring(task + k.off(T, "comm"), 16))
    return {"pid": pid, "tgid": tgid, "comm": comm, "task": task}


def stacks(k: Kernel) -> Dict[int, int]:
    """task->stack address -> task address, for every task."""
    memo = k.memo.get("vmalloc.stacks")
    if memo is not None:
        return memo  # type: ignore[return-value]
    off_stack = k.off("struct task_struct", "stack")
    out: Dict[int, int] = {}
    for t in _tasks(k):
        try:
            s = k.u64(t + off_stack)
        except FaultError:
            continue
        if s:
            out.setdefault(s, t)
    k.memo["vmalloc.stacks"] = out
    return out


def _thread_size(k: Kernel) -> int:
    # THREAD_SIZE: x86-64 16 KiB (32 KiB with KASAN); the union's size says it
    size = k.sizeof_opt("union thread_union")
    return size or 4 << k.page_shift


def name_area(k: Kernel, page: Page, owner: Owner, area: Area, index: Optional[int]) -> bool:
    """Fill ``owner`` for a page of ``area``; True if it did."""
    d = owner.detail
    if not area.vm:
        owner.kind = "vmalloc"
        d["range"] = "%#x-%#x" % (area.start, area.end)
        d["size"] = area.end - area.start
        d["caller"] = "vm_map_ram"
        if index is not None:
            d["page_index"] = index
        d["summary"] = "vm_map_ram area %#x-%#x (no vm_struct, so no caller)%s" % (
            area.start, area.end, "" if index is None else ", page %d" % index)
        return True
    task = stacks(k).get(area.addr)
    hint = area.kind_hint()
    if task is not None or (hint == "kstack" and area.size - k.page_size <= _thread_size(k)):
        owner.kind = "kstack"
        d["stack"] = area.addr
        d["range"] = "%#x-%#x" % (area.addr, area.addr + area.size)
        d["caller"] = area.caller_name
        if task is not None:
            d.update(task_ident(k, task))
            d["summary"] = "kernel stack of pid %d (%s), %#x-%#x" % (
                d["pid"], d["comm"], area.addr, area.addr + area.size)
        else:
            d["summary"] = ("kernel stack %#x-%#x of no live task (cached for reuse, or the task "
                            "is exiting); allocated by %s" % (area.addr, area.addr + area.size, area.caller_name))
        if index is not None:
            d["page_index"] = index
        return True
    owner.kind = "percpu" if hint == "percpu" else "vmalloc"
    mod = module_of(k, area.addr) if hint == "module" else None
    if mod is not None:
        d["module"] = mod
    d["range"] = "%#x-%#x" % (area.addr, area.addr + area.size)
    d["size"] = area.size
    d["caller"] = area.caller_name or ("%#x" % area.caller if area.caller else None)
    d["nr_pages"] = area.nr_pages
    d["vm_flags"] = area.flags
    if index is not None:
        d["page_index"] = index
    what = "vmalloc area"
    if mod is not None:
        what = "module %s's memory, vmalloc area" % mod
    if owner.kind == "percpu":
        # pcpu_get_vm_areas maps the units of a chunk; other pcpu_* callers
        # (pcpu_mem_zalloc inlined into pcpu_create_chunk, ...) hold its bitmaps
        if (area.caller_name or "").startswith("pcpu_get_vm_areas"):
            what = "per-cpu chunk"
        else:
            what = "per-cpu allocator metadata"
        d["percpu_part"] = what
    d["summary"] = "%s %#x-%#x (%d pages) from %s%s" % (
        what, area.addr, area.addr + area.size, area.nr_pages or (area.size >> k.page_shift),
        d["caller"] or "?", "" if index is None else ", page %d" % index)
    return True


def name_vmalloc_page(k: Kernel, page: Page, owner: Owner) -> bool:
    """Name ``page`` if it backs a vmap area; True if it did."""
    found = area_of_pfn(k, page.pfn)
    if found is None:
        return False
    return name_area(k, page, owner, found[0], found[1])


@register("unknown", "vmalloc", "kstack", "percpu")
def name_unknown(k: Kernel, page: Page, head: Page, owner: Owner) -> None:
    from .reserved import name_huge_zero

    if name_huge_zero(k, page, head, owner):
        return
    if name_vmalloc_page(k, page, owner):
        return
    # page tables the kernel did not mark (pgd pages before ~v6.14, early
    # kernel tables) are found by walking the tables themselves
    from .pgtable import name_table_page

    if owner.kind == "unknown" and name_table_page(k, page, head, owner):
        return
    d = owner.detail
    from .reserved import image_section_of

    section = image_section_of(k, page.pfn)
    if section is not None:
        d["image_section"] = section
        where = "between its sections" if section == "kernel image" else "its " + section
        owner.notes.append("inside the kernel image (%s) but not reserved: freed at boot "
                           "(alignment padding, init memory, unused .bss..decrypted) and reused" % where)
    if head.is_head and head.order:
        # before v6.10 large kmalloc had no page type: a plain __GFP_COMP block
        d.update(compound_order=head.order, head_pfn=head.pfn)
        d["summary"] = ("compound order-%d kernel allocation at pfn %#x (refcount %d, no mapping): "
                        "a large kmalloc or a driver's alloc_pages(__GFP_COMP)" % (
                            head.order, head.pfn, head.refcount))
        return
    first = _noncompound_first(k, page)
    if first is not None:
        d.update(probable_order=first)
        d["summary"] = ("probably the first page of a non-compound order-%d kernel allocation "
                        "(the next pages have refcount 0 and are on no free list); refcount %d, "
                        "no mapping" % (first, page.refcount))
        return
    d["summary"] = "no owner found: refcount %d, mapcount %d, mapping %#x, private %#x, flags %s" % (
        page.refcount, page.mapcount, page.mapping, page.private,
        "|".join(_flags(k, page)) or "-")


def _noncompound_first(k: Kernel, page: Page) -> Optional[int]:
    """The order, when ``page`` looks like the first page of a high-order
    allocation made without __GFP_COMP (see buddy._noncompound_head)."""
    from ..page import decoder_of
    from . import buddy

    d = decoder_of(k)
    nxt = page.pfn + 1
    if page.is_head or page.is_tail or page.refcount == 0 or page.pfn & 1 or not d.memmap.valid(nxt):
        return None
    p = d.read_page(nxt)
    if p.refcount or p.page_type is not None or p.is_tail or p.is_head:
        return None
    if buddy._buddy_head(k, nxt) is not None or buddy._on_pcp(k, nxt) is not None:
        return None
    guess = buddy._noncompound_head(k, nxt)
    if guess is None or guess[0] != page.pfn:
        return None
    return guess[1]


def _flags(k: Kernel, page: Page) -> List[str]:
    from ..page import decoder_of

    return decoder_of(k).flag_list(page.flags)
