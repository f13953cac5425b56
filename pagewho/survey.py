"""Whole-memory summary (``pagewho --summary``): every valid pfn, grouped by owner.

Speed (DESIGN.md §7).  Decoding a :class:`~pagewho.page.Page` per pfn in
Python costs ~4 µs; a summary of a 4 GiB machine would take seconds.  The
fast pass here does the per-page work in C, in pure stdlib Python (it must
also run in PyKdump's trimmed Python, without numpy):

1. The memmap is read in 32768-page chunks, as :func:`pagewho.scan.scan`
   does.  Each struct page field that :func:`pagewho.owner.classify` looks
   at becomes a column: a strided ``memoryview.cast('Q')`` slice.
2. Fields that are per-page noise for most pages are masked to zero with
   bit operations on big Python ints (C loops): the ``compound_head`` word
   is kept only for tail pages (there it names the head), for page_pool
   magics and, where ``slab_cache`` shares that word, for slab pages; page
   ``[1]``'s folio word (order, destructor, ``_flags_1``) is kept only for
   head pages.
3. ``zip`` of the columns gives one small *signature* tuple per page; every
   page with the same signature has the same kind.  Each distinct signature
   is classified once, by decoding one page that has it with the ordinary
   :class:`~pagewho.page.PageDecoder` and calling the ordinary
   :func:`~pagewho.owner.classify` -- one code path, so the fast pass gives
   exactly the kinds :func:`~pagewho.scan.scan` gives (tests/test_summary.py
   checks this pfn by pfn).  Signatures are cached for the whole pass.
4. ``bytes(map(kind_id.__getitem__, signatures))`` is the chunk's kinds as a
   byte string; the refinements of :func:`~pagewho.scan.scan` (pages inside
   a free buddy block, :data:`~pagewho.scan.BULK_INDEXES`) edit it with
   ``bytes.replace`` over ranges and per-pfn stores for the index entries.
   Pages the signature cannot speak for (the zero page, HVO fake heads, a
   head page whose page[1] was not read) are classified one by one exactly
   as scan() does.

Owner naming is aggregated: one lookup per slab cache, per address_space,
per anon_vma, never per page.
"""

from __future__ import annotations

import os
import sys
from struct import iter_unpack
import time
from array import array
from bisect import bisect_left
from collections import Counter
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from .kernel import Kernel
from .owner import KINDS, classify, is_thp
from .page import Page, PageDecoder, decoder_of
from .scan import BULK_INDEXES, CHUNK_PAGES
from .target import FaultError, TargetError
from .text import clean, columns, to_json

SCHEMA = "pagewho-summary/1"
MIB = 1 << 20
_ALL = 0xFFFFFFFFFFFFFFFF

Progress = Callable[[int, int], None]


# -- the fast pass ------------------------------------------------------------------

def _table(fn: Callable[[int], int]) -> bytes:
    """A bytes.translate table: byte x -> fn(x)."""
    return bytes(fn(x) & 0xFF for x in range(256))


_TO_FF = _table(lambda x: 0xFF if x else 0)


def _cond_bytes(b: bytes, table: bytes) -> int:
    """A per-page condition as an int with one 0/1 byte per page."""
    return int.from_bytes(b.translate(table), "little")


def _word_mask(cond: int, n: int) -> int:
    """0/1 bytes (one per page) -> an int of n 64-bit words, all ones where 1."""
    ff = cond.to_bytes(n, "little").translate(_TO_FF)
    ba = bytearray(8 * n)
    for j in range(8):
        ba[j::8] = ff
    return int.from_bytes(ba, "little")


class _Chunk:
    """The result of the fast pass over one chunk of pfns."""

    __slots__ = ("start", "n", "kinds", "sig_counts", "buddy_heads", "buf", "size")

    def __init__(self, start: int, n: int) -> None:
        self.start = start
        self.n = n
        #: bytearray, one kind id (:attr:`FastScan.kind_ids`) per pfn
        self.kinds = bytearray()
        #: signature -> number of pages with it (before per-pfn refinements)
        self.sig_counts: Dict[tuple, int] = {}
        #: [(pfn, order)] of the free buddy block heads in the chunk
        self.buddy_heads: List[Tuple[int, int]] = []
        self.buf = b""
        self.size = 0


class FastScan:
    """The bulk classifier of one kernel; see the module docstring."""

    def __init__(self, k: Kernel) -> None:
        from . import owners  # noqa: F401  (registers bulk indexes and namers)

        self.k = k
        d = self.d = decoder_of(k)
        self.size = size = d.size
        if size % 8:
            raise TargetError("struct page of %d bytes is not a whole number of words" % size)
        self.words = size // 8
        for name in ("off_flags", "off_head", "off_mapping"):
            if getattr(d, name) % 8:
                raise TargetError("struct page field %s is not 8-byte aligned" % name)
        #: kind name -> id (a byte); KINDS first, others as they appear
        self.kind_ids: Dict[str, int] = {kind: i for i, kind in enumerate(KINDS)}
        self.kind_names: List[str] = list(KINDS)
        self.FREE = self.kind_ids["free"]
        self.UNKNOWN = self.kind_ids["unknown"]
        self.BUDDY = self.kind_ids["buddy"]
        #: signature -> kind id, and signature -> aggregation key
        self.kid: Dict[tuple, int] = {}
        self.key: Dict[tuple, Any] = {}
        from .owner import _zero_pfns

        self.zero_pfns = sorted(_zero_pfns(k))
        # the refinements scan() applies
        self.index: Dict[int, str] = {}
        for build in BULK_INDEXES.values():
            self.index.update(build(k))
        self.index_pfns = sorted(self.index)
        self.buddy_end = -1

        # conditions read from single bytes of a field
        ph = d.pageflags.get("PG_head")
        if ph is None:
            raise TargetError("the kernel has no PG_head")
        self.head_byte = d.off_flags + ph // 8
        self.head_tab = _table(lambda x, b=ph % 8: (x >> b) & 1)
        self.tail_tab = _table(lambda x: x & 1)
        # page_pool: pp_magic (over lru.next, the compound_head word) with
        # 0xdead in the top 16 bits and 0x40 in the low byte (owner.classify)
        self.pp_tabs = (_table(lambda x: int(x & 0xFC == 0x40)),
                        _table(lambda x: int(x == 0xAD)), _table(lambda x: int(x == 0xDE)))
        # slab_cache: keyed through whichever column holds it
        S = "struct slab" if k.sizeof_opt("struct slab") else "struct page"
        self.off_cache = k.off_opt(S, "slab_cache")
        self.slab_in_w8 = self.off_cache == d.off_head
        self.slab_cond: Optional[Callable[[bytes], int]] = None
        if self.slab_in_w8:
            self.slab_cond = self._slab_condition()
        # a non-tail slab page's signature holds its cache when slab_cache
        # is the mapping word or a kept compound_head word
        self.slab_keyed = self.off_cache is not None and (
            self.off_cache == d.off_mapping or self.slab_cond is not None)
        # page_type and _refcount: one u64 column when adjacent
        pt, rc = d.off_page_type, d.off_refcount
        self.mcref_q = pt % 8 == 0 and rc == pt + 4
        # page[1]'s folio word: destructor and order bytes up to v6.5, else
        # folio->_flags_1 (order in its low byte)
        self.folio_bytes: List[int] = []
        if d.dtor_off is not None:
            self.folio_bytes.append(d.dtor_off)
            if d.order_off is not None:
                self.folio_bytes.append(d.order_off)
        self.flags1 = d.dtor_off is None or d.TRANSHUGE_PAGE_DTOR is None
        self.fake_head_check = not d.head_is_mask
        # a signature: flags, mapping, kept compound_head word, page_type and
        # refcount, then page[1]'s folio words -- one bytes row per page
        self.nfields = 4 + bool(self.folio_bytes) + self.flags1
        self.row_format = "%ds" % (8 * self.nfields)

    def _slab_condition(self) -> Optional[Callable[[bytes], int]]:
        d = self.d
        size = self.size
        if d.PG_slab is not None:
            off = d.off_flags + d.PG_slab // 8
            tab = _table(lambda x, b=d.PG_slab % 8: (x >> b) & 1)
            return lambda buf, n: _cond_bytes(buf[off::size][:n], tab)
        t = d.types
        if t.mode == "byte":
            vals = [v for v, name in t.names_by_byte.items() if name == "slab"]
            if not vals:
                return None
            off = d.off_page_type + 3
            tab = _table(lambda x, v=vals[0]: int(x == v))
            return lambda buf, n: _cond_bytes(buf[off::size][:n], tab)
        vals = [v for v, name in t.exact.items() if name == "slab"]
        if not vals or t.kmemcg_bit:
            return None
        value = vals[0]
        tabs = [_table(lambda x, b=(value >> (8 * j)) & 0xFF: int(x == b)) for j in range(4)]

        def cond(buf: bytes, n: int) -> int:
            c = -1
            for j in range(4):
                c &= _cond_bytes(buf[d.off_page_type + j::size][:n], tabs[j])
            return c
        return cond

    # -- one chunk -------------------------------------------------------------

    def chunk(self, c: int, n: int, buf: bytes, has_next: bool) -> _Chunk:
        """Classify pfns [c, c + n) whose struct pages (plus page[1] of the
        last one when ``has_next``) are ``buf``."""
        d = self.d
        size = self.size
        words = self.words
        ch = _Chunk(c, n)
        ch.buf = buf
        ch.size = size
        Q = memoryview(buf).cast("Q")
        end = n * words

        def qcol(off: int):
            return Q[off // 8:end:words]

        def bcol(off: int) -> bytes:
            b = buf[off::size][:n]
            return b + bytes(n - len(b)) if len(b) < n else b

        w8 = qcol(d.off_head)
        w8b = w8.tobytes()
        tail = _cond_bytes(w8b[0::8], self.tail_tab)
        pp0, pp6, pp7 = self.pp_tabs
        keep = tail | (_cond_bytes(w8b[0::8], pp0) & _cond_bytes(w8b[6::8], pp6)
                       & _cond_bytes(w8b[7::8], pp7))
        if self.slab_cond is not None:
            keep |= self.slab_cond(buf, n)
        W = int.from_bytes(w8b, "little")
        if d.head_is_mask and tail:
            # v7.1 compound_info masks: head = address & info (then | 1 so a
            # tail's value stays odd, unlike kept non-tail words)
            addr0 = self.k.pfn_to_page(c)
            ap = array("Q", range(addr0, addr0 + n * size, size))
            if sys.byteorder != "little":
                ap.byteswap()
            tmask = _word_mask(tail, n)
            W = ((W & tmask & int.from_bytes(ap.tobytes(), "little")) | (tmask // _ALL)) | (W & _word_mask(keep & ~tail, n))
        else:
            W &= _word_mask(keep, n)
        nf = self.nfields
        rows = bytearray(8 * nf * n)
        R = memoryview(rows).cast("Q")
        R[0::nf] = qcol(d.off_flags)
        R[1::nf] = qcol(d.off_mapping)
        R[2::nf] = memoryview(W.to_bytes(8 * n, "little")).cast("Q")
        if self.mcref_q:
            R[3::nf] = qcol(d.off_page_type)
        else:
            I32 = memoryview(buf).cast("I")
            w4 = size // 4
            R4 = memoryview(rows).cast("I")
            R4[6::2 * nf] = I32[d.off_page_type // 4:n * w4:w4]
            R4[7::2 * nf] = I32[d.off_refcount // 4:n * w4:w4]

        slow: List[int] = []
        head = _cond_bytes(bcol(self.head_byte), self.head_tab) & ~tail
        if head:
            hmask = _word_mask(head, n)
            j = 4
            if self.folio_bytes:
                ba = bytearray(8 * n)
                for jj, off in enumerate(self.folio_bytes):
                    ba[jj::8] = bcol(off)
                R[j::nf] = memoryview((int.from_bytes(ba, "little") & hmask).to_bytes(8 * n, "little")).cast("Q")
                j += 1
            if self.flags1:
                f1 = bcol_q(buf, d.flags_1_off, n, size)
                R[j::nf] = memoryview((f1 & hmask).to_bytes(8 * n, "little")).cast("Q")
            if self.fake_head_check:
                # page[1].compound_head must be this page's address + 1
                addr0 = self.k.pfn_to_page(c) + 1
                ap = array("Q", range(addr0, addr0 + n * size, size))
                if sys.byteorder != "little":
                    ap.byteswap()
                nxt = bcol_q(buf, size + d.off_head, n, size)
                bad = (nxt ^ int.from_bytes(ap.tobytes(), "little")) & hmask
                if bad:
                    bb = bad.to_bytes(8 * n, "little")
                    slow.extend(i for i in range(n) if bb[8 * i:8 * i + 8] != bytes(8))
            if not has_next and head >> (8 * (n - 1)):
                slow.append(n - 1)  # a head without its page[1] in the buffer

        sigs = list(iter_unpack(self.row_format, rows))
        counts = Counter(sigs)
        kid = self.kid
        new = [s for s in counts if s not in kid]
        if new:
            rep = dict(zip(sigs, range(n)))
            for s in new:
                self._learn(s, c, rep[s], n, buf)
        kinds = bytearray(map(kid.__getitem__, sigs))
        ch.sig_counts = counts

        # pages no signature speaks for: one by one, as scan() does
        lo = bisect_left(self.zero_pfns, c)
        while lo < len(self.zero_pfns) and self.zero_pfns[lo] < c + n:
            slow.append(self.zero_pfns[lo] - c)
            lo += 1
        for i in slow:
            page, hd = self._decode_exact(c, i, n, buf)
            kind = classify(self.k, page, hd).kind
            kinds[i] = self._id(kind)
            s = sigs[i]
            counts[s] -= 1
            counts[("pfn", c + i)] = 1
            self.key[("pfn", c + i)] = self._key(kind, page, hd)

        # free buddy blocks: heads, then pages inside (scan()'s buddy_end)
        priv = qcol(d.off_private)
        B = self.BUDDY
        heads = []
        i = kinds.find(B)
        while i >= 0:
            heads.append(i)
            i = kinds.find(B, i + 1)
        pos = 0
        FREEb, BUDDYb = bytes([self.FREE]), bytes([B])
        for h in heads + [n]:
            lim = min(h, self.buddy_end - c)
            if lim > pos:
                seg = kinds[pos:lim]
                if FREEb in seg:
                    kinds[pos:lim] = seg.replace(FREEb, BUDDYb)
            if h == n:
                break
            order = priv[h]
            ch.buddy_heads.append((c + h, order))
            if 0 < order < 64:
                self.buddy_end = c + h + (1 << order)
            pos = h + 1

        # the bulk indexes, for pages still "free" or "unknown"
        ip = self.index_pfns
        j = bisect_left(ip, c)
        F, U = self.FREE, self.UNKNOWN
        while j < len(ip) and ip[j] < c + n:
            pfn = ip[j]
            if kinds[pfn - c] in (F, U):
                kinds[pfn - c] = self._id(self.index[pfn])
            j += 1
        ch.kinds = kinds
        return ch

    def _id(self, kind: str) -> int:
        i = self.kind_ids.get(kind)
        if i is None:
            i = len(self.kind_names)
            if i > 255:
                raise TargetError("more than 256 owner kinds")
            self.kind_ids[kind] = i
            self.kind_names.append(kind)
        return i

    def _decode_exact(self, c: int, i: int, n: int, buf: bytes) -> Tuple[Page, Page]:
        """(page, head) of pfn c + i exactly as scan() decodes them."""
        d = self.d
        page = d.decode(c + i, buf, i * self.size)
        if page.is_head:
            return page, page
        if not page.is_tail:
            return page, page
        hp = page.head_pfn
        if c <= hp < c + i:
            head = d.decode(hp, buf, (hp - c) * self.size)
            if head.is_head:
                return page, head
        try:
            return page, d.read_page(hp)
        except FaultError:
            return page, page

    def _learn(self, sig: tuple, c: int, i: int, n: int, buf: bytes) -> None:
        """Classify a new signature from one page that has it."""
        page, head = self._decode_exact(c, i, n, buf)
        # the signature says nothing about the pfn: only the zero page's
        # pfn matters to classify(), and the zero page is handled apart
        same = head is page
        page.pfn = -1
        if same:
            head = page
        kind = classify(self.k, page, head).kind
        page.pfn = c + i
        self.kid[sig] = self._id(kind)
        self.key[sig] = self._key(kind, page, head)

    def _key(self, kind: str, page: Page, head: Page) -> Any:
        """What the summary groups pages of this signature by."""
        d = self.d
        if kind in ("anon", "ksm"):
            return ("anon", head.mapping & ~3, is_thp(d, head))
        if kind in ("pagecache", "shmem"):
            return ("file", head.mapping & ~3, is_thp(d, head))
        if kind == "slab" and self.slab_keyed:
            return ("slab", self._u64_of(head, self.off_cache))
        if kind == "hugetlb":
            return ("hugetlb", head.order if head.is_head else 0, head.refcount != 0)
        return None

    def _u64_of(self, page: Page, off: int) -> int:
        try:
            return self.k.u64(page.address + off)
        except FaultError:
            return 0

    # -- the whole pass -------------------------------------------------------------

    def run(self, start: int = 0, end: Optional[int] = None,
            progress: Optional[Progress] = None) -> Iterator[_Chunk]:
        """Chunks over every valid pfn in [start, end), in pfn order (same
        chunking and unreadable-chunk handling as scan())."""
        mm = self.d.memmap
        total = sum(b - a for a, b in mm.ranges(start, end))
        done = 0
        for a, b in mm.ranges(start, end):
            for c in range(a, b, CHUNK_PAGES):
                n = min(CHUNK_PAGES, b - c)
                has_next = c + n < b
                try:
                    buf = mm.read_pages(c, n + 1 if has_next else n)
                except FaultError:
                    has_next = False
                    try:
                        buf = mm.read_pages(c, n)
                    except FaultError:
                        done += n
                        if progress is not None:
                            progress(done, total)
                        continue
                yield self.chunk(c, n, buf, has_next)
                done += n
                if progress is not None:
                    progress(done, total)


def bcol_q(buf: bytes, off: int, n: int, size: int) -> int:
    """The u64 at ``off`` of each of n struct pages as one int of n words
    (zero where the buffer ends first)."""
    avail = max(0, min(n, (len(buf) - off - 8) // size + 1)) if len(buf) >= off + 8 else 0
    if off % 8 == 0:
        words = size // 8
        Q = memoryview(buf).cast("Q")
        return int.from_bytes(Q[off // 8:off // 8 + avail * words:words].tobytes(), "little")
    raw = bytearray(8 * n)
    for j in range(8):
        raw[j:8 * avail:8] = buf[off + j::size][:avail]
    return int.from_bytes(raw, "little")


def fast_kinds(k: Kernel, start: int = 0, end: Optional[int] = None) -> Iterator[Tuple[int, str]]:
    """(pfn, kind) of every valid pfn in [start, end), from the fast pass:
    the same pfns and kinds as :func:`pagewho.scan.scan` (for tests)."""
    fs = FastScan(k)
    names = fs.kind_names
    for ch in fs.run(start, end):
        for i, kid in enumerate(ch.kinds):
            yield ch.start + i, names[kid]
