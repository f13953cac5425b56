"""Decoding a struct page: flags, page_type, counts, compound head and folio.

:class:`PageDecoder` learns the layout once per kernel; :meth:`decode` turns
the raw bytes of one struct page (plus its successor, for the folio fields
that live in the first tail page) into a :class:`Page`.  Nothing here reads
memory except :meth:`PageDecoder.read_page`.
"""

from __future__ import annotations

import struct
from typing import Dict, List, Optional

from .kernel import Kernel
from .memmap import memmap_of
from .target import FaultError
from .versions import OLD_PAGE_TYPE_BASE, old_page_type_bits

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_S32 = struct.Struct("<i")


class PageTypes:
    """Decodes ``page->page_type`` for one kernel.

    Three encodings (include/linux/page-flags.h):

    * v4.18 .. v6.9 -- #defined bits, inverted under PAGE_TYPE_BASE; the
      values come from VMCOREINFO where exported (buddy, offline, and later
      slab/hugetlb/unaccepted), from :mod:`pagewho.versions` otherwise, and
      are compared exactly (v5.10's PG_kmemcg accounting bit is masked out
      first: it rides along with other types).
    * v6.10, v6.11 -- ``enum pagetype`` with ``PG_*`` bits, still inverted
      under ``PAGE_TYPE_BASE`` (0x80000000).
    * v6.12+ -- ``enum pagetype`` with ``PGTY_*`` values in the top byte
      ("mm: introduce page_type as a byte", v6.12).
    """

    def __init__(self, k: Kernel) -> None:
        enum = k.enumerators("enum pagetype")
        self.names_by_byte: Dict[int, str] = {}
        self.exact: Dict[int, str] = {}
        self.kmemcg_bit = 0
        self.mode: str
        if any(name.startswith("PGTY_") for name in enum):
            self.mode = "byte"
            for name, value in enum.items():
                if name.startswith("PGTY_") and name != "PGTY_mapcount_underflow":
                    self.names_by_byte[value] = name[5:]
        else:
            self.mode = "exact"
            if enum:  # v6.10/v6.11
                bits = {n[3:]: v for n, v in enum.items() if n.startswith("PG_")}
            else:
                bits = old_page_type_bits(k.version)
            self.kmemcg_bit = bits.pop("kmemcg", 0)
            for name, bit in bits.items():
                self.exact[0xFFFFFFFF & ~bit] = name
            # VMCOREINFO wins over the table for the values it exports.
            for name in ("buddy", "offline", "slab", "hugetlb", "unaccepted", "table", "guard"):
                value = k.number("PAGE_%s_MAPCOUNT_VALUE" % name.upper())
                if value is not None:
                    for old in [v for v, n in self.exact.items() if n == name]:
                        del self.exact[old]
                    self.exact[value & 0xFFFFFFFF] = name
        self.base = OLD_PAGE_TYPE_BASE

    def type_of(self, raw: int) -> Optional[str]:
        """The page type name ("buddy", "slab", "table", ...) or None."""
        if self.mode == "byte":
            return self.names_by_byte.get(raw >> 24)
        return self.exact.get(raw | self.kmemcg_bit)

    def kmemcg(self, raw: int) -> bool:
        """v5.10's PageKmemcg: the page is charged to a memory cgroup."""
        return bool(self.kmemcg_bit) and (raw & (OLD_PAGE_TYPE_BASE | self.kmemcg_bit)) == OLD_PAGE_TYPE_BASE


class Page:
    """One decoded struct page.  Plain data; see :meth:`PageDecoder.decode`."""

    __slots__ = (
        "pfn", "address", "flags", "refcount", "mapcount_raw", "page_type", "mapping",
        "index", "private", "head_address", "head_pfn", "is_head", "is_tail", "order",
        "dtor", "flags_1", "lru_next", "entire_mapcount", "large_mapcount",
    )

    def __init__(self) -> None:
        self.pfn = 0
        self.address = 0
        self.flags = 0
        self.refcount = 0
        #: _mapcount as stored (u32): -1 (0xffffffff) is "not mapped"
        self.mapcount_raw = 0
        #: page type name from page_type ("buddy", "slab", ...), or None
        self.page_type: Optional[str] = None
        self.mapping = 0
        self.index = 0
        self.private = 0
        #: the struct page of the compound head (self.address if not a tail)
        self.head_address = 0
        self.head_pfn = 0
        self.is_head = False
        self.is_tail = False
        #: compound order, when this is a head page (0 otherwise)
        self.order = 0
        #: compound_dtor (kernels up to v6.5), or None
        self.dtor: Optional[int] = None
        #: flags of the first tail page (folio->_flags_1), when this is a head
        self.flags_1 = 0
        #: lru.next / pp_magic word
        self.lru_next = 0
        #: head pages: the folio's entire (PMD) mapcount and, since v6.11,
        #: its total mapcount, both as stored (-1 = none); None if unknown
        self.entire_mapcount: Optional[int] = None
        self.large_mapcount: Optional[int] = None

    @property
    def mapcount(self) -> int:
        """page_mapcount()-style count: _mapcount + 1, as a signed value."""
        raw = self.mapcount_raw
        return (raw - (1 << 32) if raw & 0x80000000 else raw) + 1


class PageDecoder:
    """Struct page layout of one kernel, and decoding."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.memmap = memmap_of(k)
        P = "struct page"
        self.size = k.struct_page_size
        self.off_flags = k.off(P, "flags")
        # "compound_info" since v7.1 (drgn: _compound_info_member)
        self.head_member = "compound_info" if k.has_member(P, "compound_info") else "compound_head"
        self.off_head = k.off(P, self.head_member)
        self.off_refcount = k.off(P, "_refcount")
        self.off_mapcount = k.off(P, "_mapcount")
        pt = k.off_opt(P, "page_type")
        self.off_page_type = self.off_mapcount if pt is None else pt
        self.off_mapping = k.off(P, "mapping")
        # page->index became __folio_index in v6.16
        idx = k.off_opt(P, "index")
        self.off_index = idx if idx is not None else k.off(P, "__folio_index")
        self.off_private = k.off(P, "private")
        self.off_lru = k.off(P, "lru")
        self.types = PageTypes(k)

        # Page flags: enum pageflags; the first name of each value is the
        # canonical one (later ones are aliases such as PG_checked).
        self.pageflags = k.enumerators("enum pageflags")
        if not self.pageflags:
            self.pageflags = {
                key[7:-1]: int(v)
                for key, v in k.vmcoreinfo.items()
                if key.startswith("NUMBER(PG_")
            }
        nr = self.pageflags.get("__NR_PAGEFLAGS")
        self.nr_pageflags = nr if nr is not None else 1 + max(
            v for n, v in self.pageflags.items() if n.startswith("PG_")
        )
        self.flag_names: List[Optional[str]] = [None] * self.nr_pageflags
        for name, bit in self.pageflags.items():
            if name.startswith("PG_") and 0 <= bit < self.nr_pageflags and self.flag_names[bit] is None:
                self.flag_names[bit] = name[3:]
        self.flag_mask = (1 << self.nr_pageflags) - 1
        self.PG_head = self.bit("PG_head")
        self.PG_slab = self.pageflags.get("PG_slab")

        self._init_compound(k)

    def bit(self, name: str) -> int:
        """The mask of page flag ``name`` ("PG_lru"), or 0 if the kernel lacks it."""
        b = self.pageflags.get(name)
        return 0 if b is None else 1 << b

    def _init_compound(self, k: Kernel) -> None:
        """Where the folio's order and destructor live in the first tail page.

        Follows the history drgn's compound_order() documents:
        v6.6+ ``folio->_flags_1 & 0xff`` ("mm: free up a word in the first
        tail page"); v6.1 .. v6.5 ``folio->_folio_order``; before that
        ``page[1].compound_order``.  The destructor (``compound_dtor``,
        ``folio->_folio_dtor``) exists up to v6.5 only.
        """
        F = "struct folio"
        size = self.size
        self.order_off: Optional[int] = None
        self.order_mask = 0xFF
        self.dtor_off: Optional[int] = None
        if k.off_opt(F, "_folio_order") is not None:
            self.order_off = k.off(F, "_folio_order")
            self.dtor_off = k.off_opt(F, "_folio_dtor")
        elif k.off_opt(F, "_flags_1") is not None:
            self.order_off = k.off(F, "_flags_1")
        else:
            off = k.off_opt("struct page", "compound_order")
            self.order_off = None if off is None else size + off
            off = k.off_opt("struct page", "compound_dtor")
            self.dtor_off = None if off is None else size + off
        self.flags_1_off = size + self.off_flags
        # Mapcounts of a large folio, in its first tail page: v6.2+
        # folio->_entire_mapcount (page[1].compound_mapcount before), and
        # v6.11+ folio->_large_mapcount ("mm: track mapcount of large folios
        # in a single value").  Only kept when they lie in page[1].
        self.entire_off = k.off_opt(F, "_entire_mapcount")
        if self.entire_off is None:
            off = k.off_opt("struct page", "compound_mapcount")
            self.entire_off = None if off is None else size + off
        self.large_off = k.off_opt(F, "_large_mapcount")
        for name in ("entire_off", "large_off"):
            off = getattr(self, name)
            if off is not None and not size <= off <= 2 * size - 4:
                setattr(self, name, None)
        dtors = k.enumerators("enum compound_dtor_id")
        self.HUGETLB_PAGE_DTOR = dtors.get("HUGETLB_PAGE_DTOR", k.number("HUGETLB_PAGE_DTOR"))
        self.TRANSHUGE_PAGE_DTOR = dtors.get("TRANSHUGE_PAGE_DTOR")
        # v7.1 "mm: rework compound_head() for power-of-2 sizeof(struct page)":
        # compound_info may hold a mask instead of head + 1.
        self.head_is_mask = (
            self.head_member == "compound_info"
            and size & (size - 1) == 0
            and k.has_member("struct zone", "vmemmap_tails")
        )

    # -- decoding -----------------------------------------------------------

    def decode(self, pfn: int, buf: bytes, at: int = 0, next_ok: bool = True) -> Page:
        """Decode the struct page of ``pfn`` found at ``buf[at:]``.

        ``buf[at + size:]`` should hold the next struct page (page[1]) when
        ``next_ok``; it is needed for a head page's order and destructor.
        """
        p = Page()
        p.pfn = pfn
        p.address = self.k.pfn_to_page(pfn)
        p.flags = _U64.unpack_from(buf, at + self.off_flags)[0]
        p.refcount = _U32.unpack_from(buf, at + self.off_refcount)[0]
        raw_type = _U32.unpack_from(buf, at + self.off_page_type)[0]
        p.mapcount_raw = _U32.unpack_from(buf, at + self.off_mapcount)[0]
        p.page_type = self.types.type_of(raw_type)
        p.mapping = _U64.unpack_from(buf, at + self.off_mapping)[0]
        p.index = _U64.unpack_from(buf, at + self.off_index)[0]
        p.private = _U64.unpack_from(buf, at + self.off_private)[0]
        p.lru_next = _U64.unpack_from(buf, at + self.off_lru)[0]
        info = _U64.unpack_from(buf, at + self.off_head)[0]
        p.head_address = p.address
        if info & 1:
            p.is_tail = True
            p.head_address = (p.address & info) if self.head_is_mask else info - 1
        elif p.flags & self.PG_head:
            p.is_head = True
            if next_ok and len(buf) >= at + 2 * self.size:
                tail_info = _U64.unpack_from(buf, at + self.size + self.off_head)[0]
                if tail_info & 1 and not self.head_is_mask and tail_info - 1 != p.address:
                    # HVO "fake head" (v5.18 .. v7.0): a tail page whose
                    # vmemmap page is shared with the real head's page[1].
                    p.is_head = False
                    p.is_tail = True
                    p.head_address = tail_info - 1
                else:
                    self._decode_folio(p, buf, at)
        head_pfn = self.k.page_to_pfn(p.head_address)
        p.head_pfn = pfn if head_pfn is None else head_pfn
        return p

    def _decode_folio(self, p: Page, buf: bytes, at: int) -> None:
        p.flags_1 = _U64.unpack_from(buf, at + self.flags_1_off)[0]
        if self.order_off is not None:
            p.order = buf[at + self.order_off] & self.order_mask
        if self.dtor_off is not None:
            p.dtor = buf[at + self.dtor_off]
        if self.entire_off is not None:
            p.entire_mapcount = _S32.unpack_from(buf, at + self.entire_off)[0]
        if self.large_off is not None:
            p.large_mapcount = _S32.unpack_from(buf, at + self.large_off)[0]

    def read_page(self, pfn: int) -> Page:
        """Read and decode the struct page of one valid pfn (and its page[1])."""
        try:
            buf = self.memmap.read_pages(pfn, 2)
        except FaultError:
            buf = self.memmap.read_pages(pfn, 1)
        return self.decode(pfn, buf)

    def read_head(self, page: Page) -> Page:
        """The decoded compound head of ``page`` (``page`` itself if not a tail)."""
        if not page.is_tail:
            return page
        return self.read_page(page.head_pfn)

    # -- flag helpers ---------------------------------------------------------

    def flag_list(self, flags: int) -> List[str]:
        """Names of the page flags set in ``flags`` (low bits only)."""
        names = self.flag_names
        out = []
        f = flags & self.flag_mask
        while f:
            low = f & -f
            b = low.bit_length() - 1
            out.append(names[b] or "bit%d" % b)
            f ^= low
        return out

    def test(self, flags: int, name: str) -> bool:
        return bool(flags & self.bit(name))


def decoder_of(k: Kernel) -> PageDecoder:
    """The :class:`PageDecoder` of a kernel, built once."""
    return k.once("decoder", PageDecoder)
