"""Classifying many pfns at once: the memmap read in large chunks.

:func:`scan` reads struct page arrays section by section (one read per
chunk, never one per page), decodes them, finds each tail page's head in the
same pass, and yields ``(page, head, kind)``.  Pages inside a free buddy
block are recognised from the block head seen earlier in the same pass, as
the kernel's is_free_buddy_page() would.  Other refinements that need an
index (per-cpu lists, vmalloc areas, ...) come from :data:`BULK_INDEXES`.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterator, Optional, Tuple

from .kernel import Kernel
from .owner import classify
from .page import Page, decoder_of
from .target import FaultError

#: Per-kernel indexes that refine kinds in bulk: each is a function
#: (k) -> {pfn: kind}, consulted for pages classified "free" or "unknown"
#: (filled by pagewho.owners modules).
BULK_INDEXES: Dict[str, Callable[[Kernel], Dict[int, str]]] = {}

CHUNK_PAGES = 32768  # one memory section of 4 KiB pages: 2 MiB of struct pages


def scan(k: Kernel, start: int = 0, end: Optional[int] = None,
         progress: Optional[Callable[[int, int], None]] = None) -> Iterator[Tuple[Page, Page, str]]:
    """Every valid pfn in [start, end) as (page, head, kind), in pfn order.

    A chunk whose struct pages cannot be read is skipped and reported by
    yielding nothing for it; callers count what they got.
    """
    from . import owners  # noqa: F401  (registers bulk indexes)

    d = decoder_of(k)
    mm = d.memmap
    size = d.size
    index: Dict[int, str] = {}
    for build in BULK_INDEXES.values():
        index.update(build(k))
    buddy_end = -1  # pfns below this are inside the current free block
    buddy_head: Optional[Page] = None
    heads: Dict[int, Page] = {}
    total = sum(b - a for a, b in mm.ranges(start, end))
    done = 0
    for a, b in mm.ranges(start, end):
        for c in range(a, b, CHUNK_PAGES):
            n = min(CHUNK_PAGES, b - c)
            try:
                buf = mm.read_pages(c, n + 1 if c + n < b else n)
            except FaultError:
                try:
                    buf = mm.read_pages(c, n)
                except FaultError:
                    done += n
                    continue
            heads.clear()
            for i in range(n):
                pfn = c + i
                page = d.decode(pfn, buf, i * size)
                if page.is_head:
                    heads[pfn] = page
                    head = page
                elif page.is_tail:
                    head = heads.get(page.head_pfn) or _read_head(d, page)
                else:
                    head = page
                kind = classify(k, page, head).kind
                if kind == "buddy":
                    order = page.private
                    if 0 < order < 64:
                        buddy_end = pfn + (1 << order)
                        buddy_head = page
                elif pfn < buddy_end and kind == "free":
                    kind = "buddy"
                    head = buddy_head or head
                elif kind in ("free", "unknown") and pfn in index:
                    kind = index[pfn]
                yield page, head, kind
            done += n
            if progress is not None:
                progress(done, total)


def _read_head(d, page: Page) -> Page:
    try:
        return d.read_page(page.head_pfn)
    except FaultError:
        return page
