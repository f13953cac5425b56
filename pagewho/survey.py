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

import struct
import sys
import time
from array import array
from bisect import bisect_left
from collections import Counter
from itertools import compress
from struct import iter_unpack
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from .kernel import Kernel
from .owner import KINDS, classify, is_thp
from .page import Page, decoder_of
from .scan import BULK_INDEXES, CHUNK_PAGES
from .target import FaultError, TargetError
from .text import clean, columns, to_json

SCHEMA = "pagewho-summary/1"
MIB = 1 << 20
_ALL = 0xFFFFFFFFFFFFFFFF
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
#: kinds whose pages the summary groups by owner (see FastScan._key)
KEYED_KINDS = frozenset(("anon", "ksm", "pagecache", "shmem", "slab", "hugetlb"))
#: below one page in this many, per-page work beats whole-column masks
SPARSE = 8

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
        #: (tail row without its head, head row) -> (kind id, key)
        self.canon: Dict[Tuple[bytes, bytes], Tuple[int, Any]] = {}
        #: decoded compound heads of the current chunk, for learning
        self._heads: Dict[Any, Any] = {}

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
        low = w8b[0::8]
        tail = _cond_bytes(low, self.tail_tab)
        keep = tail
        if b"\xde" in w8b[7::8]:
            pp0, pp6, pp7 = self.pp_tabs
            keep |= (_cond_bytes(low, pp0) & _cond_bytes(w8b[6::8], pp6) & _cond_bytes(w8b[7::8], pp7))
        if self.slab_cond is not None:
            keep |= self.slab_cond(buf, n)
        nf = self.nfields
        rows = bytearray(8 * nf * n)
        R = memoryview(rows).cast("Q")
        R[0::nf] = qcol(d.off_flags)
        R[1::nf] = qcol(d.off_mapping)
        if keep:
            R[2::nf] = self._kept_words(keep, tail, w8, w8b, c, n)
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
            headb = head.to_bytes(n, "little")
            if headb.count(1) * SPARSE < n:
                self._heads_sparse(headb, buf, c, n, R, nf, slow)
            else:
                self._heads_dense(head, buf, c, n, R, nf, slow, bcol)
            if not has_next and headb[n - 1] and n - 1 not in slow:
                slow.append(n - 1)  # a head without its page[1] in the buffer

        rl = 8 * nf
        kid = self.kid
        keyed = self._keyed_table()
        # Runs of equal rows inside free buddy blocks (most of an idle
        # machine) are recognised with one memcmp each and take one step;
        # the other pages go through the per-page path.
        uniform = self._uniform_runs(buf, rows, rl, n, qcol(d.off_private))
        if uniform:
            segs = []
            pos = 0
            for a, e in uniform:
                if a > pos:
                    segs.append((pos, a))
                pos = e
            if pos < n:
                segs.append((pos, n))
            rest = b"".join([rows[a * rl:e * rl] for a, e in segs])
        else:
            segs = [(0, n)]
            rest = rows
        sigs = list(iter_unpack(self.row_format, rest))
        try:
            kr = bytearray(map(kid.__getitem__, sigs))
        except KeyError:
            # new signatures: classify one page of each
            where = [i for a, e in segs for i in range(a, e)] if uniform else range(n)
            rep = dict(zip(sigs, where))
            for s in rep.keys() - kid.keys():
                self._learn(s, c, rep[s], n, buf, rows, slow)
            kr = bytearray(map(kid.__getitem__, sigs))
        # pages per signature, for the kinds grouped by owner only
        counts = Counter(compress(sigs, kr.translate(keyed)))
        if uniform:
            kinds = bytearray(n)
            j = 0
            for a, e in segs:
                kinds[a:e] = kr[j:j + e - a]
                j += e - a
            for a, e in uniform:
                sig = (bytes(rows[a * rl:(a + 1) * rl]),)
                if sig not in kid:
                    self._learn(sig, c, a, n, buf, rows, slow)
                x = kid[sig]
                kinds[a:e] = bytes((x,)) * (e - a)
                if keyed[x]:
                    counts[sig] += e - a
        else:
            kinds = kr
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
            s = (bytes(rows[i * rl:(i + 1) * rl]),)
            counts[s] -= 1
            counts[("pfn", c + i)] = 1
            self.key[("pfn", c + i)] = self._key(kind, page, hd, buf, c)

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

    def _kept_words(self, keep: int, tail: int, w8: Any, w8b: bytes, c: int, n: int) -> Any:
        """The compound_head column with only the kept words (tails: the
        head; page_pool magics; slab caches) -- the rest zero."""
        d = self.d
        size = self.size
        keepb = keep.to_bytes(n, "little")
        if keepb.count(1) * SPARSE < n:
            col = bytearray(8 * n)
            Qc = memoryview(col).cast("Q")
            addr0 = self.k.pfn_to_page(c)
            i = keepb.find(1)
            while i >= 0:
                v = w8[i]
                if d.head_is_mask and v & 1:
                    v = ((addr0 + i * size) & v) | 1
                Qc[i] = v
                i = keepb.find(1, i + 1)
            return Qc
        W = int.from_bytes(w8b, "little")
        if d.head_is_mask and tail:
            # v7.1 compound_info masks: head = address & info (then | 1 so a
            # tail's value stays odd, unlike kept non-tail words)
            addr0 = self.k.pfn_to_page(c)
            ap = array("Q", range(addr0, addr0 + n * size, size))
            if sys.byteorder != "little":
                ap.byteswap()
            tmask = _word_mask(tail, n)
            W = ((W & tmask & int.from_bytes(ap.tobytes(), "little")) | (tmask // _ALL)
                 | (W & _word_mask(keep & ~tail, n)))
        else:
            W &= _word_mask(keep, n)
        return memoryview(W.to_bytes(8 * n, "little")).cast("Q")

    def _heads_sparse(self, headb: bytes, buf: bytes, c: int, n: int, R: Any, nf: int,
                      slow: List[int]) -> None:
        """Folio words of the (few) head pages, one by one."""
        d = self.d
        size = self.size
        end = len(buf)
        addr0 = self.k.pfn_to_page(c) + 1
        i = headb.find(1)
        while i >= 0:
            at = i * size
            j = 4
            if self.folio_bytes:
                v = 0
                for jj, off in enumerate(self.folio_bytes):
                    if at + off < end:
                        v |= buf[at + off] << (8 * jj)
                R[i * nf + j] = v
                j += 1
            if self.flags1:
                off = at + d.flags_1_off
                R[i * nf + j] = _U64.unpack_from(buf, off)[0] if off + 8 <= end else 0
            if self.fake_head_check:
                off = at + size + d.off_head
                nxt = _U64.unpack_from(buf, off)[0] if off + 8 <= end else 0
                if nxt != addr0 + at:
                    slow.append(i)
            i = headb.find(1, i + 1)

    def _heads_dense(self, head: int, buf: bytes, c: int, n: int, R: Any, nf: int,
                     slow: List[int], bcol: Callable[[int], bytes]) -> None:
        """Folio words of many head pages, with big-int masks."""
        d = self.d
        size = self.size
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

    def _uniform_runs(self, buf: bytes, rows: bytearray, rl: int, n: int, priv: Any) -> List[Tuple[int, int]]:
        """[a, e) ranges after free buddy heads whose rows are all equal."""
        t = self.d.types
        lane, tab, vals = self._buddy_probe
        if lane is None:
            return []
        out = []
        cand = buf[lane::self.size][:n].translate(tab)
        off = self.d.off_page_type
        size = self.size
        i = cand.find(1)
        while i >= 0:
            if t.type_of(_U32.unpack_from(buf, i * size + off)[0]) == "buddy":
                order = priv[i]
                e = min(n, i + (1 << order)) if 0 < order < 64 else i + 1
                if e - i > 2:
                    first = rows[(i + 1) * rl:(i + 2) * rl]
                    if rows[(i + 1) * rl:e * rl] == first * (e - i - 1):
                        out.append((i + 1, e))
                        i = cand.find(1, e)
                        continue
            i = cand.find(1, i + 1)
        return out

    @property
    def _buddy_probe(self) -> Tuple[Optional[int], bytes, Any]:
        """(byte offset in struct page, translate table) of a cheap
        necessary test for a buddy page type; verified per candidate."""
        p = self.__dict__.get("_probe")
        if p is None:
            t = self.d.types
            off = self.d.off_page_type
            p = (None, b"", None)
            if t.mode == "byte":
                v = [b for b, name in t.names_by_byte.items() if name == "buddy"]
                if v:
                    p = (off + 3, _table(lambda x, v=v[0]: int(x == v)), v)
            else:
                v = [raw for raw, name in t.exact.items() if name == "buddy"]
                if v:
                    lows = {raw & 0xFF for raw in v} | {(raw & ~t.kmemcg_bit) & 0xFF for raw in v}
                    p = (off, _table(lambda x, lows=frozenset(lows): int(x in lows)), v)
            self.__dict__["_probe"] = p
        return p

    def _keyed_table(self) -> bytes:
        """kind id -> 1 for the kinds whose signatures carry an owner key."""
        t = self.__dict__.get("_keyed")
        if t is None or t[0] != len(self.kind_names):
            table = bytes(int(i < len(self.kind_names) and self.kind_names[i] in KEYED_KINDS)
                          for i in range(256))
            t = (len(self.kind_names), table)
            self.__dict__["_keyed"] = t
        return t[1]

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
        cache = self._heads
        if cache.get("chunk") != c:
            cache.clear()
            cache["chunk"] = c
        key = (hp, c <= hp < c + i)
        head = cache.get(key)
        if head is not None:
            return page, head
        if key[1]:
            head = d.decode(hp, buf, (hp - c) * self.size)
            if head.is_head:
                cache[key] = head
                return page, head
        try:
            head = d.read_page(hp)
        except FaultError:
            return page, page
        cache[key] = head
        return page, head

    def _learn(self, sig: tuple, c: int, i: int, n: int, buf: bytes,
               rows: Optional[bytearray] = None, slow: Optional[List[int]] = None) -> None:
        """Classify a new signature from one page that has it.

        A tail page's signature holds its head, so every compound page has
        signatures of its own.  What classify() reads of a tail is in the
        tail's row, and what it reads of the head is in the head's row; so a
        tail whose head was decoded from this chunk is looked up by (its
        row without the head, the head's row) first, and decoded only when
        that pair is new.
        """
        canon = None
        row = sig[0]
        if rows is not None and row[16] & 1:
            hp, rem = divmod(_U64.unpack_from(row, 16)[0] - 1 - self.k.vmemmap, self.size)
            rl = len(row)
            if not rem and c <= hp < c + i and (not slow or hp - c not in slow):
                canon = (row[:16] + bytes(8) + row[24:], bytes(rows[(hp - c) * rl:(hp - c + 1) * rl]))
                got = self.canon.get(canon)
                if got is not None:
                    self.kid[sig], self.key[sig] = got
                    return
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
        self.key[sig] = self._key(kind, page, head, buf, c)
        if canon is not None and head is not page and head.is_head and head.pfn == hp:
            self.canon[canon] = (self.kid[sig], self.key[sig])

    def _key(self, kind: str, page: Page, head: Page, buf: bytes = b"", c: int = 0) -> Any:
        """What the summary groups pages of this signature by."""
        d = self.d
        if kind in ("anon", "ksm"):
            return ("anon", head.mapping & ~3, is_thp(d, head))
        if kind in ("pagecache", "shmem"):
            return ("file", head.mapping & ~3, is_thp(d, head))
        if kind == "slab" and self.slab_keyed:
            at = (head.pfn - c) * self.size + self.off_cache
            if 0 <= at and at + 8 <= len(buf) and head.pfn >= c:
                cache = _U64.unpack_from(buf, at)[0]
            else:
                cache = self._u64_of(head, self.off_cache)
            return ("slab", cache, not page.is_tail)
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


# -- the summary ----------------------------------------------------------------------

def _try(default: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """Naming is best effort: a namer that fails leaves its part unnamed."""
    try:
        return fn(*args)
    except (TargetError, ImportError, AttributeError, ValueError, KeyError, IndexError,
            OverflowError, RecursionError, TypeError):
        return default


class _Progress:
    """Progress on stderr, for runs over 2 s when stderr is a terminal."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.shown = False
        try:
            self.tty = sys.stderr is not None and sys.stderr.isatty()
        except (AttributeError, ValueError):
            self.tty = False

    def __call__(self, done: int, total: int) -> None:
        if not self.tty or time.monotonic() - self.t0 < 2.0:
            return
        sys.stderr.write("\rpagewho: %d of %d pages (%d%%)" % (done, total, 100 * done // max(total, 1)))
        sys.stderr.flush()
        self.shown = True

    def end(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * 60 + "\r")
            sys.stderr.flush()


class Summary:
    """Every valid pfn, grouped by owner.  :meth:`collect` runs the fast
    pass; :meth:`to_dict` is the "pagewho-summary/1" document."""

    def __init__(self, k: Kernel, top: int = 10) -> None:
        self.k = k
        self.top = top
        self.fs = FastScan(k)
        self.pages = 0
        self.unreadable = 0
        self.seconds = 0.0
        self.kind_pages: Counter = Counter()
        self.keyed: Counter = Counter()
        #: (zone, order, migratetype) -> free blocks
        self.buddy_blocks: Counter = Counter()
        self.pcp_zone: Counter = Counter()
        #: (chunk start, kinds bytearray), for the map and reserved ranges
        self.chunks: List[Tuple[int, bytearray]] = []
        self.vm_callers: Counter = Counter()
        self.kstack_cached = 0
        self.notes: List[str] = []

    # -- collecting ----------------------------------------------------------------

    def collect(self, progress: Optional[Progress] = None, start: int = 0,
                end: Optional[int] = None) -> Summary:
        """Classify every valid pfn in [start, end) (all by default)."""
        t0 = time.monotonic()
        fs = self.fs
        k = self.k
        refine = self._refinements()
        mm = fs.d.memmap
        total = sum(b - a for a, b in mm.ranges(start, end))
        mt_cache: Dict[int, Optional[str]] = {}
        from .zones import zone_of

        for ch in fs.run(start, end, progress):
            kinds = ch.kinds
            self._refine(ch.start, kinds, refine)
            self.chunks.append((ch.start, kinds))
            self.pages += ch.n
            for kid in set(kinds):
                self.kind_pages[fs.kind_names[kid]] += kinds.count(kid)
            key = fs.key
            keyed = self.keyed
            for sig, n in ch.sig_counts.items():
                kk = key.get(sig)
                if kk is not None and n:
                    keyed[kk] += n
            for pfn, order in ch.buddy_heads:
                z = zone_of(k, pfn)
                pb = pfn >> 9
                if pb not in mt_cache:
                    mt_cache[pb] = _try(None, _migratetype, k, pfn)
                self.buddy_blocks[(z.name if z else "?", order, mt_cache[pb] or "?")] += 1
        self.unreadable = total - self.pages
        self.seconds = time.monotonic() - t0
        return self

    def _refinements(self) -> Dict[str, Any]:
        """What pagewho PFN's namers would add for pages the struct page
        leaves "free" or "unknown": pcp lists, vmalloc areas, kernel stacks
        (used only when no bulk index of scan() already gave them)."""
        k = self.k
        out: Dict[str, Any] = {"pcp": [], "vm": [], "vm_info": {}}
        from .owners import buddy as _buddy

        pcp = _try({}, _buddy._pcp_index, k) or {}
        pfns = []
        for h, e in pcp.items():
            pfns.extend(range(h, h + (1 << min(e.order, 20))))
        out["pcp"] = sorted(pfns)
        out["pcp_zone"] = {h: e.zone for h, e in pcp.items()}
        try:
            from .owners import vmalloc as _vm
        except ImportError:
            return out
        index = _try({}, _vm._pfn_index, k) or {}
        out["vm"] = sorted(index)
        out["vm_index"] = index
        return out

    def _area_kind(self, area: Any) -> Tuple[str, str]:
        """(kind, caller) of a vmap area, as the vmalloc namer decides;
        kind "kstack" with caller "" is a stack of no live task."""
        memo = self.__dict__.setdefault("_areas", {})
        got = memo.get(id(area))
        if got is None:
            from .owner import Owner
            from .owners import vmalloc as _vm

            o = Owner("unknown")
            _try(None, _vm.name_area, self.k, None, o, area, None)
            caller = o.detail.get("caller") or "?"
            got = (o.kind if o.kind in ("vmalloc", "kstack", "percpu") else "vmalloc", str(caller))
            if got[0] == "kstack" and "pid" not in o.detail:
                got = ("kstack", "")
            memo[id(area)] = got
        return got

    def _refine(self, c: int, kinds: bytearray, refine: Dict[str, Any]) -> None:
        fs = self.fs
        n = len(kinds)
        F, U = fs.FREE, fs.UNKNOWN
        pcp = refine["pcp"]
        j = bisect_left(pcp, c)
        P = fs._id("pcp")
        while j < len(pcp) and pcp[j] < c + n:
            i = pcp[j] - c
            if kinds[i] == F:
                kinds[i] = P
            j += 1
        vm = refine["vm"]
        j = bisect_left(vm, c)
        while j < len(vm) and vm[j] < c + n:
            pfn = vm[j]
            i = pfn - c
            if kinds[i] == U:
                area = refine["vm_index"][pfn][0]
                kind, caller = self._area_kind(area)
                kinds[i] = fs._id(kind)
                if kind == "vmalloc":
                    self.vm_callers[caller] += 1
                elif kind == "kstack" and not caller:
                    self.kstack_cached += 1
            j += 1

    # -- naming, aggregated ------------------------------------------------------------

    def _slab_caches(self) -> List[Dict[str, Any]]:
        k = self.k
        by_cache: Counter = Counter()
        slabs: Counter = Counter()
        for key, n in self.keyed.items():
            if key[0] == "slab":
                by_cache[key[1]] += n
                if key[2]:
                    slabs[key[1]] += n
        out = []
        for cache, n in by_cache.most_common():
            name = _try(None, _cache_name, k, cache)
            out.append({"name": name, "address": cache, "pages": n, "slabs": slabs[cache]})
        return out

    def _files(self, shmem: bool) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
        """(files, filesystems) for page cache (or shmem) pages."""
        k = self.k
        from .owners import file as _file

        off_host = k.off("struct address_space", "host")
        off_sb = k.off("struct inode", "i_sb")
        off_ino = k.off("struct inode", "i_ino")
        kinds = self._mapping_kinds()
        per: Counter = Counter()
        thp: Counter = Counter()
        for key, n in self.keyed.items():
            if key[0] == "file" and kinds.get(key[1]) == shmem:
                per[key[1]] += n
                if key[2]:
                    thp[key[1]] += n
        by_fs: Counter = Counter()
        files = []
        for i, (mapping, n) in enumerate(per.most_common()):
            inode = _try(0, k.u64, mapping + off_host)
            sb = _try(0, k.u64, inode + off_sb) if inode else 0
            fstype, dev = _try(("?", "?"), _file.sb_info, k, sb) if sb else ("?", "?")
            by_fs[(fstype, dev)] += n
            if i < self.top:
                path = None
                dentry = _try(None, _file.inode_dentry, k, inode) if inode else None
                if dentry:
                    info = _try(None, _file.dentry_path, k, dentry)
                    if info:
                        path = _file.path_text(info)
                files.append({"path": path, "ino": _try(None, k.u64, inode + off_ino) if inode else None,
                              "fs": fstype, "dev": dev, "mapping": mapping, "inode": inode,
                              "pages": n, "thp_pages": thp[mapping]})
        fss = [{"fs": f, "dev": d, "pages": n} for (f, d), n in by_fs.most_common()]
        return files, fss

    def _mapping_kinds(self) -> Dict[int, bool]:
        """mapping -> True when its pages were classified shmem."""
        memo = self.__dict__.get("_mkinds")
        if memo is None:
            memo = {}
            for sig, key in self.fs.key.items():
                if key is not None and key[0] == "file":
                    memo[key[1]] = self.fs.kind_names[self.fs.kid[sig]] == "shmem" if sig in self.fs.kid \
                        else memo.get(key[1], False)
            self.__dict__["_mkinds"] = memo
        return memo

    def _anon(self) -> List[Dict[str, Any]]:
        k = self.k
        per: Counter = Counter()
        for key, n in self.keyed.items():
            if key[0] == "anon":
                per[key[1]] += n
        off_mm = k.off("struct vm_area_struct", "vm_mm")
        groups: Counter = Counter()
        names: Dict[tuple, List[Dict[str, Any]]] = {}
        unresolved = 0
        for i, (av, n) in enumerate(per.most_common()):
            if i >= 4096:
                unresolved += n
                continue
            procs: Dict[int, str] = {}
            _try(None, _anon_procs, k, av, off_mm, procs)
            key = tuple(sorted(procs))
            groups[key] += n
            names[key] = [{"pid": p, "comm": procs[p]} for p in key]
        out = [{"processes": names[g], "pages": n} for g, n in groups.most_common()]
        if unresolved:
            out.append({"processes": None, "pages": unresolved})
        return out

    def _hugetlb(self) -> List[Dict[str, Any]]:
        per: Dict[int, List[int]] = {}
        for key, n in self.keyed.items():
            if key[0] == "hugetlb":
                per.setdefault(key[1], [0, 0])[0 if key[2] else 1] += n
        out = []
        for order, (used, free) in sorted(per.items()):
            out.append({"order": order, "size_kib": (self.k.page_size << order) >> 10,
                        "used_pages": used, "free_pages": free,
                        "used": used >> order, "free": free >> order})
        return out

    def _thp(self) -> Dict[str, int]:
        out = {"anon": 0, "file": 0}
        for key, n in self.keyed.items():
            if key[0] in ("anon", "file") and key[2]:
                out[key[0]] += n
        return out

    def _buddy(self) -> Dict[str, Any]:
        nr = _try(11, _nr_orders, self.k)
        zones: Dict[str, List[int]] = {}
        mts: Counter = Counter()
        for (zone, order, mt), n in self.buddy_blocks.items():
            if 0 <= order < nr:
                zones.setdefault(zone, [0] * nr)[order] += n
                mts[(zone, mt)] += n << order
        from .zones import zones as _zones

        order = [z.name for z in _try([], _zones, self.k)]
        names = sorted(zones, key=lambda z: order.index(z) if z in order else len(order))
        return {
            "zones": [{"zone": z, "blocks_by_order": zones[z], "pages": sum(c << o for o, c in enumerate(zones[z]))}
                      for z in names],
            "by_migratetype": [{"zone": z, "migratetype": m, "pages": n}
                               for (z, m), n in sorted(mts.items(), key=lambda kv: -kv[1])],
            "blocks": [{"zone": z, "order": o, "migratetype": m, "blocks": n}
                       for (z, o, m), n in sorted(self.buddy_blocks.items())],
        }

    def _reserved(self) -> List[Dict[str, Any]]:
        k = self.k
        R = self.fs.kind_ids["reserved"]
        from .owners import reserved as _res

        found: List[Tuple[str, int]] = []
        secs = _try([], _res.image_sections, k) or []
        image = [s for s in secs if s[0] == "kernel image"]
        for _name, a, b in (image or secs):
            found.append(("kernel image", self._count(R, a, b)))
        mem = _try(set(), _res.memmap_pfns, k) or set()
        found.append(("memmap (struct pages)", sum(self._count(R, a, b) for a, b in _runs(sorted(mem)))))
        rd = _try(None, _res._initrd, k)
        if rd:
            found.append(("initrd", self._count(R, rd[0], rd[1])))
        total = self.kind_pages.get("reserved", 0)
        named = sum(n for _, n in found)
        found.append(("other (firmware, memblock, holes)", max(0, total - named)))
        return [{"kind": name, "pages": n} for name, n in found if n]

    def _count(self, kid: int, a: int, b: int) -> int:
        n = 0
        for c, kinds in self.chunks:
            lo, hi = max(a, c), min(b, c + len(kinds))
            if lo < hi:
                n += kinds.count(kid, lo - c, hi - c)
        return n

    def _pcp_by_zone(self) -> List[Dict[str, Any]]:
        from .zones import zones

        P = self.fs.kind_ids.get("pcp")
        out = []
        for z in _try([], zones, self.k) or []:
            n = self._count(P, z.start_pfn, z.end_pfn) if P is not None else 0
            if n:
                out.append({"zone": z.name, "node": z.node, "pages": n})
        return out

    # -- output -------------------------------------------------------------------

    def to_dict(self) -> Dict[str, Any]:
        k = self.k
        ps = k.page_size
        kinds = [{"kind": kind, "pages": n, "mib": round(n * ps / MIB, 2)}
                 for kind, n in sorted(self.kind_pages.items(), key=lambda kv: (-kv[1], kv[0])) if n]
        files, file_fs = _try(([], []), self._files, False)
        shm, shm_fs = _try(([], []), self._files, True)
        slab = _try([], self._slab_caches)
        anon = _try([], self._anon)
        vm = [{"caller": c, "pages": n} for c, n in self.vm_callers.most_common()]
        top = self.top
        return {
            "schema": SCHEMA,
            "kernel": k.release,
            "page_size": ps,
            "pages": self.pages,
            "unreadable_pages": self.unreadable,
            "seconds": round(self.seconds, 3),
            "kinds": kinds,
            "buddy": self._buddy(),
            "pcp": {"pages": self.kind_pages.get("pcp", 0), "zones": _try([], self._pcp_by_zone)},
            "slab": {"pages": self.kind_pages.get("slab", 0), "caches": slab[:top],
                     "nr_caches": len(slab)},
            "pagecache": {"pages": self.kind_pages.get("pagecache", 0), "filesystems": file_fs,
                          "files": files[:top]},
            "shmem": {"pages": self.kind_pages.get("shmem", 0), "filesystems": shm_fs,
                      "files": shm[:top]},
            "anon": {"pages": self.kind_pages.get("anon", 0), "ksm_pages": self.kind_pages.get("ksm", 0),
                     "processes": anon[:top]},
            "pgtable": {"pages": self.kind_pages.get("pgtable", 0)},
            "hugetlb": {"pages": self.kind_pages.get("hugetlb", 0), "sizes": self._hugetlb()},
            "thp": dict(self._thp(), pages=sum(self._thp().values())),
            "vmalloc": {"pages": self.kind_pages.get("vmalloc", 0), "callers": vm[:top]},
            "kstack": {"pages": self.kind_pages.get("kstack", 0), "cached_pages": self.kstack_cached},
            "reserved": {"pages": self.kind_pages.get("reserved", 0),
                         "kinds": _try([], self._reserved)},
            "unknown": {"pages": self.kind_pages.get("unknown", 0)},
            "notes": self.notes,
        }


def _anon_procs(k: Kernel, av: int, off_mm: int, procs: Dict[int, str]) -> None:
    """Fill pid -> comm with the processes whose vmas hang off an anon_vma."""
    from .owners import anon as _anon
    from .owners import tasks as _tasks

    for vma in _anon.anon_vma_vmas(k, av):
        mm = k.u64(vma + off_mm)
        for t in _tasks.tasks_of(k).processes(mm):
            procs[t.tgid] = t.comm


def _runs(pfns: List[int]) -> Iterator[Tuple[int, int]]:
    """Sorted pfns as maximal [a, b) runs."""
    a = prev = None
    for p in pfns:
        if a is None:
            a = prev = p
        elif p == prev + 1:
            prev = p
        else:
            yield a, prev + 1
            a = prev = p
    if a is not None:
        yield a, prev + 1


class _ReadCache:
    """A Kernel whose u64 reads are remembered (a dump does not change):
    the pageblock lookups of neighbouring blocks share their section
    pointers and bitmap words."""

    def __init__(self, k: Kernel) -> None:
        self._k = k
        self._words: Dict[int, int] = {}

    def u64(self, address: int) -> int:
        v = self._words.get(address)
        if v is None:
            v = self._words[address] = self._k.u64(address)
        return v

    def __getattr__(self, name: str) -> Any:
        return getattr(self._k, name)


def _migratetype(k: Kernel, pfn: int) -> Optional[str]:
    from .owners.buddy import migratetype

    rc = k.memo.get("survey.reads")
    if rc is None:
        rc = k.memo["survey.reads"] = _ReadCache(k)
    return migratetype(rc, pfn)  # type: ignore[arg-type]


def _nr_orders(k: Kernel) -> int:
    from .owners.buddy import nr_page_orders

    return nr_page_orders(k)


def _cache_name(k: Kernel, cache: int) -> Optional[str]:
    from .owners.kutil import cstr

    name = cstr(k, k.u64(cache + k.off("struct kmem_cache", "name")))
    return None if name is None else clean(name)


def _mib(pages: int, ps: int) -> str:
    return "%.1f" % (pages * ps / MIB)


def summary_text(doc: Dict[str, Any]) -> List[str]:
    """The summary document as text for people."""
    from .report import KIND_TEXT

    ps = doc["page_size"]
    total = doc["pages"] or 1
    out = ["pagewho summary of %s: %d pages (%s MiB)%s" % (
        doc["kernel"], doc["pages"], _mib(doc["pages"], ps),
        ", %d unreadable" % doc["unreadable_pages"] if doc["unreadable_pages"] else "")]
    rows = [[r["kind"], KIND_TEXT.get(r["kind"], ""), str(r["pages"]), _mib(r["pages"], ps),
             "%.1f" % (100.0 * r["pages"] / total)] for r in doc["kinds"]]
    out += ["", columns(rows, ["KIND", "WHAT", "PAGES", "MIB", "%"])]

    def section(title: str, rows: List[List[str]], headers: List[str]) -> None:
        if rows:
            out.extend(["", title, columns(rows, headers)])

    b = doc["buddy"]
    if b["zones"]:
        nr = max(len(z["blocks_by_order"]) for z in b["zones"])
        section("Free buddy blocks by zone and order (like /proc/buddyinfo):",
                [[z["zone"]] + [str(x) for x in z["blocks_by_order"]] + [str(z["pages"]), _mib(z["pages"], ps)]
                 for z in b["zones"]], ["ZONE"] + [str(o) for o in range(nr)] + ["PAGES", "MIB"])
        section("Free buddy pages by migratetype:",
                [[m["zone"], m["migratetype"], str(m["pages"]), _mib(m["pages"], ps)] for m in b["by_migratetype"]],
                ["ZONE", "MIGRATETYPE", "PAGES", "MIB"])
    section("Per-cpu page lists (pcp):",
            [[z["zone"], str(z["pages"]), _mib(z["pages"], ps)] for z in doc["pcp"]["zones"]],
            ["ZONE", "PAGES", "MIB"])
    s = doc["slab"]
    section("Slab caches (top %d of %d):" % (len(s["caches"]), s["nr_caches"]),
            [[clean(c["name"] or "?"), str(c["slabs"]), str(c["pages"]), _mib(c["pages"], ps)] for c in s["caches"]],
            ["CACHE", "SLABS", "PAGES", "MIB"])
    for kind, title in (("pagecache", "Page cache"), ("shmem", "Shmem/tmpfs")):
        d = doc[kind]
        section("%s by filesystem:" % title,
                [[f["fs"], f["dev"], str(f["pages"]), _mib(f["pages"], ps)] for f in d["filesystems"]],
                ["FS", "DEV", "PAGES", "MIB"])
        section("%s files (top %d):" % (title, len(d["files"])),
                [[clean(f["path"] or "<%s %s> inode %s" % (f["fs"], f["dev"], f["ino"])), str(f["pages"]),
                  _mib(f["pages"], ps)] for f in d["files"]],
                ["FILE", "PAGES", "MIB"])
    a = doc["anon"]
    section("Anonymous memory by the processes sharing its anon_vma (top %d; a parent and the "
            "children it forked share one):" % len(a["processes"]),
            [[_procs(p["processes"]), str(p["pages"]), _mib(p["pages"], ps)] for p in a["processes"]],
            ["PROCESSES", "PAGES", "MIB"])
    section("Hugetlb:", [["%d KiB" % h["size_kib"], str(h["used"]), str(h["free"]),
                          _mib(h["used_pages"] + h["free_pages"], ps)] for h in doc["hugetlb"]["sizes"]],
            ["SIZE", "USED", "FREE", "MIB"])
    t = doc["thp"]
    if t["pages"]:
        out += ["", "THP and large rmappable folios: %d pages (%s MiB): anon %d, file/shmem %d" % (
            t["pages"], _mib(t["pages"], ps), t["anon"], t["file"])]
    section("vmalloc by caller (top %d):" % len(doc["vmalloc"]["callers"]),
            [[clean(c["caller"]), str(c["pages"]), _mib(c["pages"], ps)] for c in doc["vmalloc"]["callers"]],
            ["CALLER", "PAGES", "MIB"])
    ks = doc["kstack"]
    if ks["pages"]:
        out += ["", "Kernel stacks: %d pages (%s MiB)%s" % (
            ks["pages"], _mib(ks["pages"], ps),
            ", %d of them cached stacks of no live task" % ks["cached_pages"] if ks["cached_pages"] else "")]
    section("Reserved by kind:", [[r["kind"], str(r["pages"]), _mib(r["pages"], ps)] for r in doc["reserved"]["kinds"]],
            ["KIND", "PAGES", "MIB"])
    out += ["", "%d pages classified in %.2f s" % (doc["pages"], doc["seconds"])]
    for note in doc["notes"]:
        out.append("note: " + note)
    return out


def _procs(procs: Optional[List[Dict[str, Any]]]) -> str:
    if procs is None:
        return "(not resolved)"
    if not procs:
        return "no live process"
    text = ", ".join("%d (%s)" % (p["pid"], clean(p["comm"])) for p in procs[:3])
    if len(procs) > 3:
        text += " +%d more" % (len(procs) - 3)
    return text


def run_summary(k: Kernel, args: Any, write: Callable[[str], None]) -> int:
    """``pagewho --summary [--top N] [--json] [--map FILE]``.

    Front ends may set ``args.progress`` to a callback (done, total); by
    default progress goes to stderr when it is a terminal and the run takes
    more than two seconds.
    """
    progress = getattr(args, "progress", None)
    own = None
    if progress is None:
        own = progress = _Progress()
    try:
        s = Summary(k, top=max(0, getattr(args, "top", 10) or 0)).collect(progress)
    finally:
        if own is not None:
            own.end()
    doc = s.to_dict()
    path = getattr(args, "map", None)
    if path:
        from .svgmap import write_map

        try:
            doc["map"] = write_map(s, path)
        except OSError as e:
            write("pagewho: cannot write %s: %s\n" % (path, e))
            return 1
    if getattr(args, "json", False):
        write(to_json(doc) + "\n")
    else:
        write("\n".join(summary_text(doc)) + "\n")
        if path:
            write("map written to %s\n" % path)
    return 0
