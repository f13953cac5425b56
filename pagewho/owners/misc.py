"""The small kernel-side owners: offline/guard/unaccepted pages, movable
non-LRU pages, page_pool, zsmalloc and large kmalloc.

* offline (PG_offline / PGTY_offline): taken away by a balloon driver
  (virtio_balloon, hv_balloon, xen, vmw_balloon) or memory offlining; the
  driver is named when its module symbols are present.
* movable: ``page->mapping & ~3`` is a ``struct movable_operations`` (v6.0+,
  "mm/migrate: convert movable page ops") or an ``address_space`` whose
  ``a_ops`` names the owner (balloon_aops, zsmalloc, z3fold), v5.10 .. v5.19.
* page_pool: ``page->pp`` (v5.14+) -> ``page_pool.p.netdev`` -> its name.
* large_kmalloc: a compound allocation of ``PAGE_SIZE << order`` bytes.

Checked on v5.10, v6.1, v6.12 and v7.x Debian cloud kernels where they
occur; the rest follows the kernel source of those versions.
"""

from __future__ import annotations

from ..kernel import Kernel
from ..owner import Owner, register
from ..page import Page
from ..target import FaultError
from .kutil import cstr, is_kernel_ptr

# (driver, a symbol present when it is built in, a symbol whose non-zero
# value says it is active or None)
_BALLOON_SYMBOLS = (
    ("virtio_balloon", "virtballoon_probe", None),
    ("hv_balloon", "hv_balloon_probe", None),
    ("xen balloon", "balloon_set_new_target", "xen_domain_type"),  # built into Debian kernels
    ("vmw_balloon", "vmballoon_init", None),
    ("virtio_mem", "virtio_mem_probe", None),
)


def _balloon_drivers(k: Kernel):
    memo = k.memo.get("misc.balloons")
    if memo is None:
        memo = []
        for name, sym, active in _BALLOON_SYMBOLS:
            if k.sym_opt(sym) is None:
                continue
            if active is not None:
                addr = k.sym_opt(active)
                try:
                    if addr is None or not k.u32(addr):  # XEN_NATIVE == 0
                        continue
                except FaultError:
                    continue
            memo.append(name)
        k.memo["misc.balloons"] = memo
    return memo


@register("offline", "guard", "unaccepted")
def name_offline(k: Kernel, page: Page, head: Page, owner: Owner) -> None:
    d = owner.detail
    if owner.kind == "guard":
        d["summary"] = "guard page of a free buddy block (debug_pagealloc / page guard)"
        return
    if owner.kind == "unaccepted":
        d["summary"] = "unaccepted memory (confidential VM, not yet accepted by the guest)"
        return
    if page.mapping & 3 == 2:
        # balloon compaction makes inflated pages movable (balloon_page_insert)
        _name_movable(k, page, owner)
        ops = (d.get("ops") or "").split("+")[0]
        if "balloon" in ops:
            d["by"] = "balloon driver"
            d["summary"] = "offline: inflated into a balloon (movable, ops %s)" % ops
            return
    drivers = _balloon_drivers(k)
    d["balloon_drivers"] = drivers
    d["summary"] = "offline: taken from the allocator by %s" % (
        " or ".join(drivers) if drivers
        else "a balloon or memory hot(un)plug driver (virtio_balloon, virtio_mem, hv_balloon, ...)")


def _name_movable(k: Kernel, page: Page, owner: Owner) -> None:
    d = owner.detail
    ptr = page.mapping & ~3
    d["movable_ops"] = ptr
    name = k.symbolize(ptr) if ptr else None
    # v5.10 .. v5.19: an address_space whose a_ops says who owns it
    if (name is None or not name.split("+")[0].endswith(("_ops", "_mops"))) and is_kernel_ptr(ptr):
        off = k.off_opt("struct address_space", "a_ops")
        if off is not None and k.sizeof_opt("struct movable_operations") is None:
            try:
                aops = k.u64(ptr + off)
                name = k.symbolize(aops) if aops else name
            except FaultError:
                pass
    d["ops"] = name
    return


@register("movable")
def name_movable(k: Kernel, page: Page, head: Page, owner: Owner) -> None:
    _name_movable(k, page, owner)
    ops = (owner.detail.get("ops") or "").split("+")[0]
    if "balloon" in ops:
        who = "balloon driver"
    elif "zsmalloc" in ops or ops.startswith("zs_"):
        who = "zsmalloc"
    elif "z3fold" in ops:
        who = "z3fold"
    else:
        who = ops or "?"
    owner.detail["owner"] = who
    owner.detail["summary"] = "movable non-LRU page of %s (ops %s)" % (who, ops or "?")


@register("page_pool")
def name_page_pool(k: Kernel, page: Page, head: Page, owner: Owner) -> None:
    d = owner.detail
    off = k.off_opt("struct page", "pp")
    if off is None:
        d["summary"] = "page_pool page"
        return
    pool = k.u64(head.address + off)
    d["pool"] = pool
    dev = None
    off_dev = k.off_opt("struct page_pool", "p.netdev")
    if is_kernel_ptr(pool) and off_dev is not None:
        netdev = k.u64(pool + off_dev)
        off_name = k.off_opt("struct net_device", "name")
        if is_kernel_ptr(netdev) and off_name is not None:
            dev = cstr(k, netdev + off_name, 16)
    d["netdev"] = dev
    d["summary"] = "page_pool %#x%s" % (pool, " of %s" % dev if dev else "")


@register("zsmalloc")
def name_zsmalloc(k: Kernel, page: Page, head: Page, owner: Owner) -> None:
    owner.detail["summary"] = "zsmalloc zspage page (zram/zswap compressed memory)"


@register("large_kmalloc")
def name_large_kmalloc(k: Kernel, page: Page, head: Page, owner: Owner) -> None:
    order = head.order if head.is_head else 0
    size = k.page_size << order
    owner.detail.update(order=order, size=size, head_pfn=head.pfn)
    owner.detail["address"] = k.pfn_to_virt(head.pfn)
    owner.detail["summary"] = "order-%d block (%d bytes) at %#x, serving one kmalloc() too big for the slab caches" % (
        order, size, k.pfn_to_virt(head.pfn))
