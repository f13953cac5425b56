"""Anonymous and KSM pages: which processes map them, and where.

Anon (mm/rmap.c): ``folio->mapping`` is the ``anon_vma`` with bit 0 set.
Every vma that may map the folio hangs off the anon_vma's interval tree
(``anon_vma->rb_root``, an rb_root_cached of ``anon_vma_chain.rb``, each
chain naming its ``vma``); a forked child's vmas are on the parent's
anon_vma too.  A vma maps page index ``i`` at
``vm_start + ((i - vm_pgoff) << PAGE_SHIFT)``, where ``i`` is the folio's
index (``page->index``, ``__folio_index`` from v6.16) plus the page's place
in the folio.  Each candidate is checked in the mm's page tables
(:func:`pagewho.owners.tasks.mappers`).

KSM (mm/ksm.c): ``mapping`` has both low bits set and points to the
``ksm_stable_node`` (``stable_node`` before the 2022 "ksm_" prefix rename:
5.10 has the old names, 6.1 the new); its ``hlist`` holds one
``ksm_rmap_item`` (``rmap_item``) per merged mapping, with the ``mm`` and
user ``address`` (its low bits are flags, all below PAGE_SIZE).

Checked against the sample dumps of 5.10, 6.1, 6.12 and 7.x.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

from ..kernel import Kernel
from ..owner import Owner, is_thp, register
from ..page import Page, decoder_of
from ..target import FaultError
from ..text import clean
from .file import page_pgoff
from .swap import in_swapcache, swap_detail, swap_text
from .tasks import (
    MAX_MAPPERS,
    MAX_NODES,
    Task,
    hlist_nodes,
    is_kernel_ptr,
    mappers,
    mappers_text,
    pte_verifies,
    rb_nodes,
    tasks_of,
    unnamed_note,
    user_lookup,
)


def anon_vma_vmas(k: Kernel, anon_vma: int) -> Iterator[int]:
    """The vmas of every anon_vma_chain in ``anon_vma``'s interval tree."""
    A = "struct anon_vma_chain"
    o_rb = k.off(A, "rb")
    o_vma = k.off(A, "vma")
    for node in rb_nodes(k, anon_vma + k.off("struct anon_vma", "rb_root")):
        yield k.u64(node - o_rb + o_vma)


def _folio_detail(k: Kernel, page: Page, head: Page, det: Dict[str, object]) -> str:
    """THP / large folio and mlock detail; returns a summary suffix."""
    d = decoder_of(k)
    text = ""
    if head.is_head and head.order > 0:
        det["thp"] = is_thp(d, head)
        det["order"] = head.order
        det["head_pfn"] = head.pfn
        det["subpage"] = page.pfn - head.pfn
        text += "; %s order %d, head pfn %#x" % (
            "THP" if det["thp"] else "large folio", head.order, head.pfn)
    else:
        det["thp"] = False
    if d.test(head.flags, "PG_mlocked"):
        det["mlocked"] = True
        text += "; mlocked"
    return text


def _swap_key(k: Kernel, page: Page, head: Page) -> Optional[Tuple[int, int]]:
    """(type, offset) of the page's swap slot when it is in the swap cache."""
    if not in_swapcache(k, head):
        return None
    sw = swap_detail(k, page, head)
    return sw["type"], sw["offset"]


def _swap_suffix(k: Kernel, page: Page, head: Page, det: Dict[str, object]) -> str:
    if not in_swapcache(k, head):
        return ""
    sw = swap_detail(k, page, head)
    det["swap"] = sw
    return "; in swap cache: " + swap_text(sw)


@register("anon")
def name_anon(k: Kernel, page: Page, head: Page, owner: Owner) -> None:
    det = owner.detail
    anon_vma = head.mapping & ~3
    pgoff = page_pgoff(page, head)
    det["anon_vma"] = anon_vma
    det["index"] = pgoff
    swap = _swap_key(k, page, head)
    found, ruled_out = mappers(k, anon_vma_vmas(k, anon_vma), pgoff, page.pfn, regions=True, swap=swap)
    det["mappers"] = found[:MAX_MAPPERS]
    det["nr_mappers"] = len(found)
    note = unnamed_note(k, found)
    if note:
        owner.notes.append(note)
    det["verified"] = bool(found) and all(m["verified"] for m in found)
    if ruled_out:
        det["not_mapping"] = ruled_out
    text = ("mapped by " + mappers_text(found)) if found else "mapped by no live process"
    regions = sorted({str(m["region"]) for m in found if m.get("region")})
    if regions:
        text += " (%s)" % ", ".join(clean(r) for r in regions[:3])
    text += _folio_detail(k, page, head, det)
    text += _swap_suffix(k, page, head, det)
    det["summary"] = text


def _stable_node_type(k: Kernel) -> str:
    return "struct ksm_stable_node" if k.sizeof_opt("struct ksm_stable_node") else "struct stable_node"


def _rmap_item_type(k: Kernel) -> str:
    return "struct ksm_rmap_item" if k.sizeof_opt("struct ksm_rmap_item") else "struct rmap_item"


@register("ksm")
def name_ksm(k: Kernel, page: Page, head: Page, owner: Owner) -> None:
    det = owner.detail
    stable = head.mapping & ~3
    S = _stable_node_type(k)
    R = _rmap_item_type(k)
    det["stable_node"] = stable
    kpfn = k.u64(stable + k.off(S, "kpfn"))
    if kpfn != head.pfn:
        owner.notes.append("stable node %#x names pfn %#x, not this page (being migrated?)" % (stable, kpfn))
    o_hlist = k.off(R, "hlist")
    o_mm = k.off(R, "mm")
    o_addr = k.off(R, "address")
    found: List[Dict[str, object]] = []
    nitems = 0
    page_mask = ~(k.page_size - 1)
    swap = _swap_key(k, page, head)
    for node in hlist_nodes(k, stable + k.off(S, "hlist"), MAX_NODES):
        nitems += 1
        item = node - o_hlist
        try:
            mm = k.u64(item + o_mm)
            vaddr = k.u64(item + o_addr) & page_mask
        except FaultError:
            continue
        if not is_kernel_ptr(mm):
            continue
        state, value = user_lookup(k, mm, vaddr)
        verified = pte_verifies(state, value, page.pfn, swap)
        if verified is None:
            continue
        procs = tasks_of(k).processes(mm) or [Task(0, -1, -1, "", mm)]
        for t in procs:
            found.append({"pid": t.tgid if t.tgid >= 0 else None, "comm": t.comm or None,
                          "vaddr": vaddr, "verified": verified, "mm": mm, "pte": state})
    found.sort(key=lambda m: (not m["verified"], m["pid"] is None, m["pid"] or 0, m["vaddr"]))
    det["rmap_items"] = nitems
    det["mappers"] = found[:MAX_MAPPERS]
    det["nr_mappers"] = len(found)
    note = unnamed_note(k, found)
    if note:
        owner.notes.append(note)
    procs_seen: Dict[object, object] = {}
    for m in found:
        procs_seen.setdefault(m["pid"], m["comm"])
    det["processes"] = [{"pid": p, "comm": c} for p, c in procs_seen.items()]
    text = "merged page mapped %d time%s" % (len(found), "" if len(found) == 1 else "s")
    if found:
        text += ", by " + mappers_text(found)
    text += _folio_detail(k, page, head, det)
    text += _swap_suffix(k, page, head, det)
    det["summary"] = text


def hugetlb_mappers(k: Kernel, page: Page, head: Page) -> List[Dict[str, object]]:
    """The processes mapping a hugetlb folio (for the hugetlb namer).

    Candidates come from the anon_vma (private mappings) or the hugetlbfs
    file's i_mmap (shared ones).  The folio's index counted huge pages until
    v6.7 ("mm/filemap: remove hugetlb special casing in filemap.c") and
    base pages since; both readings are tried and the page tables decide.
    Returns mappers as :func:`pagewho.owners.tasks.mappers` does, for the
    head page (``vaddr`` is where the huge page starts).
    """
    from .file import i_mmap_vmas

    mapping = head.mapping & ~3
    if not mapping:
        return []
    if head.mapping & 1:
        vmas = list(anon_vma_vmas(k, mapping))
    else:
        vmas = list(i_mmap_vmas(k, mapping))
    order = head.order or 9
    out: List[Dict[str, object]] = []
    for pgoff in (head.index, head.index << order):
        found, _ = mappers(k, iter(vmas), pgoff, head.pfn)
        if any(m["verified"] for m in found):
            return [m for m in found if m["verified"]]
        out = out or found
    return out
