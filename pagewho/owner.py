"""Who owns a page: classification from the struct page, then naming.

:func:`classify` looks only at the page and its compound head and returns an
:class:`Owner` with a ``kind`` from the taxonomy in ../DESIGN.md §5.  It is
cheap, and it is what the whole-memory summary runs for every pfn.

:func:`identify` adds what answers the user's real question (which slab
cache, which file, which processes, ...) by asking the namer registered for
the kind in :data:`NAMERS` (modules under :mod:`pagewho.owners`).  A namer
may also *refine* the kind: a page that its struct page leaves "unknown" may
turn out to back a vmalloc area or a kernel stack.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from .kernel import Kernel
from .page import Page, PageDecoder, decoder_of
from .target import FaultError, TargetError
from .versions import PAGE_MAPPING_ANON, PAGE_MAPPING_FLAGS, PAGE_MAPPING_KSM, PAGE_MAPPING_MOVABLE

#: Every kind pagewho can answer, in the order the summary lists them.
KINDS = (
    "buddy", "pcp", "free", "slab", "large_kmalloc", "pgtable", "anon", "ksm", "pagecache",
    "shmem", "swapcache", "hugetlb", "vmalloc", "kstack", "percpu", "page_pool", "zsmalloc",
    "movable", "reserved", "zero", "offline", "guard", "unaccepted", "unknown", "corrupt",
)


class Owner:
    """The answer for one pfn.

    ``kind`` is one of :data:`KINDS`; ``detail`` holds the naming facts
    (JSON-ready: str, int, bool, None, lists and dicts of them); ``notes``
    holds caveats the user should see (filtered memory, drift, ...).
    """

    __slots__ = ("kind", "detail", "notes")

    def __init__(self, kind: str, **detail: Any) -> None:
        self.kind = kind
        self.detail: Dict[str, Any] = detail
        self.notes: List[str] = []

    def __repr__(self) -> str:
        return "Owner(%r, %r)" % (self.kind, self.detail)


def _is_hugetlb(d: PageDecoder, head: Page) -> bool:
    """folio_test_hugetlb() across versions.

    v6.9+: a page type on the head.  v6.6 .. v6.8: PG_hugetlb in the first
    tail page's flags (folio->_flags_1).  Up to v6.5: compound_dtor ==
    HUGETLB_PAGE_DTOR.
    """
    if head.page_type == "hugetlb":
        return True
    if not head.is_head:
        return False
    if head.dtor is not None:
        return d.HUGETLB_PAGE_DTOR is not None and head.dtor == d.HUGETLB_PAGE_DTOR
    return bool(d.bit("PG_hugetlb") and head.flags_1 & d.bit("PG_hugetlb"))


def is_thp(d: PageDecoder, head: Page) -> bool:
    """A large folio that maps into user space (THP or mTHP / large file folio).

    Up to v6.5 compound_dtor == TRANSHUGE_PAGE_DTOR marks THPs; since
    "mm: convert ... to large_rmappable" (v6.6) PG_large_rmappable in
    folio->_flags_1 marks every rmappable large folio.
    """
    if not head.is_head:
        return False
    if head.dtor is not None and d.TRANSHUGE_PAGE_DTOR is not None:
        return head.dtor == d.TRANSHUGE_PAGE_DTOR
    rmappable = d.bit("PG_large_rmappable")
    return bool(rmappable and head.flags_1 & rmappable)


def is_slab(d: PageDecoder, head: Page) -> bool:
    """PageSlab: a page type since v6.10 ("mm: free up PG_slab"), a flag before."""
    if head.page_type == "slab":
        return True
    return d.PG_slab is not None and bool(head.flags & (1 << d.PG_slab))


def classify(k: Kernel, page: Page, head: Page) -> Owner:
    """The owner kind of ``page`` from its struct page and compound head.

    Cheap and without naming; see the module docstring.
    """
    d = decoder_of(k)
    pt = page.page_type
    if pt == "buddy":
        return Owner("buddy", where="block head", order=page.private, block_pfn=page.pfn)
    if pt in ("offline", "guard", "unaccepted"):
        return Owner(pt)
    if pt == "table":
        return Owner("pgtable")
    if is_slab(d, head):
        return Owner("slab")
    if _is_hugetlb(d, head):
        return Owner("hugetlb")
    if head.page_type in ("zsmalloc", "large_kmalloc"):
        return Owner(head.page_type)
    if head.page_type == "table":  # a page-table folio of order > 0
        return Owner("pgtable")
    # page_pool pages carry PP_SIGNATURE in pp_magic, which overlays lru.next
    # (include/linux/mm_types.h); the low bits and, since v6.15, a DMA index
    # in the middle bits vary, so compare the low byte and the poison top.
    if head.lru_next >> 48 == 0xDEAD and head.lru_next & 0xFC == 0x40 and not head.mapping:
        return Owner("page_pool")

    mapping = head.mapping
    low = mapping & PAGE_MAPPING_FLAGS
    swapcache = d.test(head.flags, "PG_swapcache") and d.test(head.flags, "PG_swapbacked")
    if low == PAGE_MAPPING_KSM:
        return Owner("ksm")
    if low == PAGE_MAPPING_ANON:
        return Owner("anon")
    if low == PAGE_MAPPING_MOVABLE:
        return Owner("movable")
    if mapping:
        if d.test(head.flags, "PG_swapbacked"):
            return Owner("shmem")
        return Owner("pagecache")
    if swapcache:
        return Owner("swapcache")
    if page.pfn in _zero_pfns(k):
        return Owner("zero")
    if d.test(page.flags, "PG_reserved"):
        return Owner("reserved")
    if page.refcount == 0 and head.refcount == 0:
        return Owner("free")
    return Owner("unknown")


def _zero_pfns(k: Kernel) -> frozenset:
    pfns = k.memo.get("zero_pfns")
    if pfns is None:
        found = set()
        addr = k.sym_opt("empty_zero_page")
        if addr is not None:
            pfn = k.virt_to_pfn(addr)
            if pfn is not None:
                found.add(pfn)
        pfns = frozenset(found)
        k.memo["zero_pfns"] = pfns
    return pfns  # type: ignore[return-value]


#: kind -> namer(k, page, head, owner) that fills owner.detail, may change
#: owner.kind, and returns nothing.  Filled by pagewho.owners.
Namer = Callable[[Kernel, Page, Page, Owner], None]
NAMERS: Dict[str, Namer] = {}


def register(*kinds: str) -> Callable[[Namer], Namer]:
    """Decorator: make a function the namer of ``kinds``."""

    def wrap(fn: Namer) -> Namer:
        for kind in kinds:
            NAMERS[kind] = fn
        return fn

    return wrap


def identify(k: Kernel, pfn: int) -> PageReport:
    """Everything pagewho knows about one pfn: decoded page, head, owner.

    Raises :class:`TargetError` for a pfn without a struct page or whose
    struct page cannot be read; naming failures become notes, not errors.
    """
    from . import owners  # noqa: F401  (registers the namers)

    d = decoder_of(k)
    if not d.memmap.valid(pfn):
        raise TargetError(d.memmap.why_invalid(pfn))
    try:
        page = d.read_page(pfn)
    except FaultError as e:
        raise TargetError("struct page of pfn %#x at %#x is not in the dump (%s)" % (
            pfn, k.pfn_to_page(pfn), e.why or "unreadable")) from None
    head = page
    notes: List[str] = []
    if page.is_tail:
        # a tail's head is a struct page with a memmap, before it and at most
        # a gigantic page (order 18) away, and it is marked as a head
        head_pfn = k.page_to_pfn(page.head_address)
        why = None
        if head_pfn is None:
            why = "is not the address of a struct page"
        elif not d.memmap.valid(head_pfn):
            why = "has no memmap"
        elif not 0 < pfn - head_pfn < (1 << 18):
            why = "is not within an order-18 folio before the page"
        if why is None:
            try:
                head = d.read_page(head_pfn)  # type: ignore[arg-type]
            except FaultError as e:
                notes.append("compound head page unreadable: %s" % e)
                head = page
            else:
                if not head.is_head:
                    why = "is not a head page (flags %#x)" % head.flags
        if why is not None:
            owner = Owner("corrupt", reason="compound head %#x %s" % (page.head_address, why))
            return PageReport(k, page, page, owner)
    owner = classify(k, page, head)
    namer = NAMERS.get(owner.kind)
    # Pages the struct page alone leaves unexplained are offered to the
    # namers that can recognise them by other means.
    if namer is not None:
        _run_namer(namer, k, page, head, owner)
    try:
        k.read(k.pfn_to_virt(pfn), 1)
    except FaultError:
        # a filtered dump (makedumpfile -d) keeps struct pages but drops
        # free, cache and user pages: the answer above is from struct page
        notes.append("the page's own contents are not in the dump (filtered out or a hole); "
                     "this answer comes from its struct page")
    owner.notes[:0] = notes
    return PageReport(k, page, head, owner)


def _run_namer(namer: Namer, k: Kernel, page: Page, head: Page, owner: Owner) -> None:
    try:
        namer(k, page, head, owner)
    except FaultError as e:
        owner.notes.append("could not name the owner: memory at %#x is not in the dump" % e.address)
    except TargetError as e:
        owner.notes.append("could not name the owner: %s" % e)
    except (ValueError, IndexError, KeyError, OverflowError, RecursionError) as e:
        owner.notes.append("could not name the owner: corrupt data (%s)" % type(e).__name__)


class PageReport:
    """A pfn's decoded page, compound head and owner, ready to print."""

    def __init__(self, k: Kernel, page: Page, head: Page, owner: Owner) -> None:
        self.k = k
        self.page = page
        self.head = head
        self.owner = owner

    def head_order(self) -> int:
        return self.head.order if self.head.is_head else 0

    def flags(self) -> List[str]:
        return decoder_of(self.k).flag_list(self.page.flags)

    def head_flags(self) -> List[str]:
        return decoder_of(self.k).flag_list(self.head.flags)

    def folio_pages(self) -> int:
        return 1 << self.head_order()

    def zone(self) -> Optional[str]:
        from .zones import zone_of

        z = zone_of(self.k, self.page.pfn)
        return None if z is None else z.name
