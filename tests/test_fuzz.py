"""Fuzzing the core with corrupt struct pages built from real ones (issue 6).

For each sample kernel, a few thousand real struct pages of every kind the
dump holds (buddy, slab, anon, page cache, shmem, hugetlb, page tables,
reserved, ...) are the seeds.  Hypothesis mutates them -- random bytes, bit
flips in flags / page_type / compound_head / mapping / private, compound
heads pointing at themselves, at each other (a loop), at garbage or far
away, absurd compound orders, mappings pointing at garbage, at the struct
page itself, into a cycle or into a long real list (a buddy free list),
page_type values of other kinds -- and lays
them over the real dump (tests/overlay.py), so every walk pagewho makes
runs through real and corrupt memory together.  For every mutated pfn:

* ``pagewho.owner.identify`` returns (no exception escapes),
* within a budget of reads and time (an unbounded walk fails the test),
* with a kind from ``KINDS``; a compound head that cannot be one gives
  "corrupt" with the evidence,
* and the report renders as text without control characters and as JSON
  that ``json.loads`` accepts; some go through ``command.run`` as a user
  would type them;
* the bulk classifier (``pagewho.scan``, behind ranges and summaries) gives
  every mutated pfn a kind from ``KINDS`` too.

``pagewho.text.clean`` and ``to_json`` are fuzzed with arbitrary bytes.

The summary path (pagewho.survey) gets the same corrupt pages, ten to a
window of 1024 pfns.

Deterministic (derandomize) and bounded (max_examples): about 26,000
struct pages per kernel, over 100,000 for the four sample kernels.
"""

from __future__ import annotations

import json
import os
import random
import re
import struct
from typing import Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from overlay import BudgetExceeded, OverlayTarget
from samples import open_sample

from pagewho import command
from pagewho.kernel import kernel_of
from pagewho.owner import KINDS, identify
from pagewho.page import decoder_of
from pagewho.report import page_dict, page_text
from pagewho.scan import scan
from pagewho.text import clean, to_json

#: struct pages mutated and identified per example, and examples per kernel
BATCH = 10
DEFAULT_EXAMPLES = 2600
#: PAGEWHO_FUZZ_EXAMPLES=N changes it (fewer for a quick look, more for a long soak)
EXAMPLES = int(os.environ.get("PAGEWHO_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
#: seeds kept per kind
SEEDS_PER_KIND = 3000
#: what one pfn may cost (an unbounded walk fails long before)
MAX_READS = 20000
MAX_SECONDS = 2.0
#: every run of this file must fuzz at least this many struct pages (4 kernels)
TOTAL_WANTED = 100_000

CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f\x80-\x9f]")
FIELDS = ("flags", "head", "mapping", "private", "index", "refcount", "mapcount", "page_type",
          "lru_next", "lru_prev", "slab_cache", "freelist", "counters")

#: struct pages fuzzed, per kernel release
COUNTS: Dict[str, int] = {}
IDENTIFIED: Dict[str, int] = {}


class Fuzzer:
    """One sample kernel: its seeds, field offsets and an overlay target."""

    def __init__(self, sample) -> None:
        self.release = sample.release
        self.t = OverlayTarget(open_sample(sample))
        k = self.k = kernel_of(self.t)
        d = self.d = decoder_of(k)
        self.size = d.size
        self.mm = d.memmap
        rnd = random.Random(sample.release)
        by_kind: Dict[str, List[int]] = {}
        for page, _head, kind in scan(k):
            by_kind.setdefault(kind, []).append(page.pfn)
        self.seeds: List[Tuple[str, List[int]]] = []
        for kind in sorted(by_kind):
            pfns = by_kind[kind]
            if len(pfns) > SEEDS_PER_KIND:
                pfns = sorted(rnd.sample(pfns, SEEDS_PER_KIND))
            self.seeds.append((kind, pfns))
        # warm the per-kernel caches (slab caches, tasks, free lists ...) on
        # real memory, so no cache is built from a corrupt page
        for _kind, pfns in self.seeds:
            for pfn in pfns[:3]:
                identify(k, pfn)
        P = "struct page"
        S = "struct slab" if k.sizeof_opt("struct slab") else P
        self.off: Dict[str, Tuple[int, int]] = {
            "flags": (d.off_flags, 8), "head": (d.off_head, 8), "mapping": (d.off_mapping, 8),
            "private": (d.off_private, 8), "index": (d.off_index, 8), "refcount": (d.off_refcount, 4),
            "mapcount": (d.off_mapcount, 4), "page_type": (d.off_page_type, 4),
            "lru_next": (d.off_lru, 8), "lru_prev": (d.off_lru + 8, 8),
        }
        for name, member in (("slab_cache", "slab_cache"), ("freelist", "freelist"), ("counters", "counters")):
            off = k.off_opt(S, member)
            if off is not None:
                self.off[name] = (off, 8 if name != "counters" else 4)
        # raw page_type values of every type this kernel knows
        types = d.types
        self.type_values = sorted(set(types.exact) | {b << 24 for b in types.names_by_byte}) or [0xFFFFFF7F]
        self.head_bit = d.PG_head
        self.free_lists = dict(self.seeds).get("buddy", [])[:64]
        self.pages = 0
        self.identified = 0

    # -- mutations --------------------------------------------------------------

    def seed(self, kind_i: int, pfn_i: int) -> int:
        _kind, pfns = self.seeds[kind_i % len(self.seeds)]
        return pfns[pfn_i % len(pfns)]

    def field(self, name: str) -> Tuple[int, int]:
        return self.off.get(name, self.off["flags"])

    def apply(self, pfn: int, buf: bytearray, mutation: tuple, extra: Dict[int, bytes]) -> None:
        """Apply one mutation to ``buf`` (the struct pages of pfn and pfn+1)."""
        k, size = self.k, self.size
        addr = k.pfn_to_page(pfn)
        op = mutation[0]
        if op == "bytes":
            _, at, data = mutation
            at %= len(buf)
            buf[at:at + len(data)] = data[:len(buf) - at]
        elif op == "flip":
            _, name, bit = mutation
            off, width = self.field(name)
            bit %= 8 * width
            buf[off + bit // 8] ^= 1 << (bit % 8)
        elif op == "set":
            _, name, value = mutation
            off, width = self.field(name)
            buf[off:off + width] = (value & ((1 << 8 * width) - 1)).to_bytes(width, "little")
        elif op == "type":
            _, i, noise = mutation
            off, _w = self.field("page_type")
            value = self.type_values[i % len(self.type_values)]
            struct.pack_into("<I", buf, off, value ^ (noise if noise & 1 else 0))
        elif op == "head":
            _, how, value = mutation
            off, _w = self.field("head")
            if how == "self":
                target = addr
            elif how == "loop":  # pfn -> other -> pfn, both tails
                other = pfn + 1 + value % 64
                if not self.mm.valid(other):
                    other = pfn
                target = k.pfn_to_page(other)
                raw = bytearray(self.t.inner.read(target, size))
                struct.pack_into("<Q", raw, off, addr | 1)
                extra[target] = bytes(raw)
            elif how == "after":  # a head after its tail
                target = addr + size * (1 + value % 512)
            elif how == "far":
                target = k.pfn_to_page(value % (self.mm.end_pfn * 4))
            elif how == "vmemmap_odd":
                target = k.vmemmap + (value % (self.mm.end_pfn * size)) | 8
            else:  # garbage
                target = value
            struct.pack_into("<Q", buf, off, (target | 1) & (2 ** 64 - 1))
        elif op == "order":
            _, order, dtor = mutation
            f_off, _w = self.field("flags")
            flags = struct.unpack_from("<Q", buf, f_off)[0] | self.head_bit
            struct.pack_into("<Q", buf, f_off, flags)
            h_off, _w = self.field("head")
            struct.pack_into("<Q", buf, h_off, struct.unpack_from("<Q", buf, h_off)[0] & ~1)
            # page[1]: a tail of this head, with the order (and dtor) fields
            if len(buf) == 2 * size:
                struct.pack_into("<Q", buf, size + h_off, addr | 1)
                d = self.d
                if d.order_off is not None:
                    buf[d.order_off] = order
                if d.dtor_off is not None:
                    buf[d.dtor_off] = dtor
        elif op == "mapping":
            _, how, low = mutation
            off, _w = self.field("mapping")
            if how == "self":
                value = addr
            elif how == "cycle":  # points at a struct page whose mapping points back
                other = k.pfn_to_page(pfn ^ 1) if self.mm.valid(pfn ^ 1) else addr
                raw = bytearray(self.t.inner.read(other, size))
                struct.pack_into("<Q", raw, off, addr | (low & 3))
                extra[other] = bytes(raw)
                value = other
            elif how == "into_page":
                value = k.pfn_to_virt(pfn) + 8 * (low + 1)
            elif how == "poison":
                value = 0xDEAD000000000100
            else:
                value = random.Random(low).getrandbits(64)
            struct.pack_into("<Q", buf, off, (value & ~3 | (low & 3)) & (2 ** 64 - 1))
        elif op == "whole":
            _, data = mutation
            buf[:size] = (data * (size // max(1, len(data)) + 1))[:size]
        elif op == "list":
            # a pointer into a long real list: a buddy free list runs through
            # the lru of thousands of struct pages, so a walker that starts
            # there has a long way to go unless it checks what it walks
            _, name, value, length = mutation
            off, width = self.field(name)
            if width == 8 and self.free_lists:
                lru = k.pfn_to_page(self.free_lists[value % len(self.free_lists)]) + self.d.off_lru
                ptr = lru - 8 * (length % 20) | (length >> 5 & 3)
                struct.pack_into("<Q", buf, off, ptr)

    def impossible_head(self, pfn: int, buf: bytes) -> bool:
        """A tail page whose compound head cannot be its head: not a struct
        page, no memmap there, or not before the tail."""
        p = self.d.decode(pfn, buf)
        if not p.is_tail:
            return False
        head = self.k.page_to_pfn(p.head_address)
        return head is None or head >= pfn or not self.mm.valid(head)

    # -- one example ---------------------------------------------------------------

    def run(self, cases, render: int) -> None:
        t, k, size = self.t, self.k, self.size
        t.clear()
        plan = self.lay(cases)
        # judged on what the overlay finally shows (cases may overlap)
        plan = [(pfn, self.impossible_head(
            pfn, t.read(k.pfn_to_page(pfn), 2 * size if self.mm.valid(pfn + 1) else size)), mutations)
            for pfn, mutations in plan]
        self.check(plan, render)

    def lay(self, cases, window: Optional[int] = None) -> List[Tuple[int, List[tuple]]]:
        """Mutate the cases' struct pages over the real ones: at their seed
        pfns, or packed into the 1024 pfns from ``window``."""
        t, k, size = self.t, self.k, self.size
        plan = []
        for kind_i, pfn_i, mutations in cases:
            pfn = self.seed(kind_i, pfn_i) if window is None else window + pfn_i % 1024
            if not self.mm.valid(pfn):
                continue
            # the struct page and, when there is one, page[1]
            has_next = self.mm.valid(pfn + 1)
            buf = bytearray(t.inner.read(k.pfn_to_page(pfn), 2 * size if has_next else size))
            extra: Dict[int, bytes] = {}
            for m in mutations:
                self.apply(pfn, buf, m, extra)
            for a, data in extra.items():
                t.patch(a, data)
            # page[1] only when a mutation changed it (it is another pfn's
            # struct page, perhaps mutated by another case of the batch)
            real_next = t.inner.read(k.pfn_to_page(pfn) + size, size) if has_next else b""
            t.patch(k.pfn_to_page(pfn), bytes(buf) if buf[size:] != real_next else bytes(buf[:size]))
            plan.append((pfn, mutations))
        return plan

    def check(self, plan, render: int) -> None:
        t, k = self.t, self.k
        try:
            for i, (pfn, bad_head, mutations) in enumerate(plan):
                t.budget(MAX_READS, MAX_SECONDS)
                try:
                    r = identify(k, pfn)
                except BudgetExceeded as e:
                    raise AssertionError("pfn %#x: unbounded walk (%s) after %r" % (pfn, e, mutations)) from None
                t.budget(None, None)
                self.pages += 1
                self.identified += 1
                kind = r.owner.kind
                assert kind in KINDS, (pfn, kind, mutations)
                if bad_head and r.page.is_tail:
                    assert kind == "corrupt", (hex(pfn), r.owner, mutations)
                if kind == "corrupt":
                    assert r.owner.detail.get("reason") or r.owner.notes, r.owner
                lines = page_text(r, verbose=True)
                assert not any(CONTROL.search(line) for line in lines), lines
                json.loads(to_json(page_dict(r)))
                # the bulk path (ranges, summaries) classifies it too
                if i < 3:
                    t.budget(MAX_READS, MAX_SECONDS)
                    kinds = [kind for _p, _h, kind in scan(k, pfn, pfn + 1)]
                    t.budget(None, None)
                    assert len(kinds) == 1 and kinds[0] in KINDS, (hex(pfn), kinds, mutations)
                if i == render % len(plan):
                    out: List[str] = []
                    argv = [hex(pfn)] + (["--json"] if render & 1 else ["-v"])
                    t.budget(MAX_READS, MAX_SECONDS)
                    rc = command.run(t, argv, out.append)
                    t.budget(None, None)
                    text = "".join(out)
                    assert rc == 0, text
                    assert "Traceback" not in text and not CONTROL.search(text), text
                    if render & 1:
                        json.loads(text)
        finally:
            t.budget(None, None)
            t.clear()


_FUZZERS: Dict[str, Fuzzer] = {}


def fuzzer_of(sample) -> Fuzzer:
    if sample.release not in _FUZZERS:
        _FUZZERS[sample.release] = Fuzzer(sample)
    return _FUZZERS[sample.release]


# A case is CASE_BYTES of fuzz input, read like libFuzzer's data provider:
# kind (1 byte), seed (3), then up to 3 mutations of 12 bytes (op, sub,
# length, spare, 8-byte value).  Hypothesis generates and varies the bytes
# (zeros, repeats, boundary values); decoding them is cheap, so a run can
# afford 100,000 struct pages.
CASE_BYTES = 4 + 3 * 12
HEADS = ("self", "loop", "after", "far", "vmemmap_odd", "garbage")
MAPPINGS = ("self", "cycle", "into_page", "poison", "garbage")
SPECIAL = (0, 1, 2, 3, 2 ** 64 - 1, 2 ** 63, 0xFFFFFFFF, 0x7FFFFFFF, 0xDEAD000000000100,
           0xDEAD000000000122, 0xFFFF800000000000)
OPS = ("bytes", "flip", "set", "set_special", "type", "head", "order", "mapping", "whole", "list")


def decode_case(raw: bytes) -> Tuple[int, int, List[tuple]]:
    kind_i = raw[0]
    pfn_i = int.from_bytes(raw[1:4], "little")
    mutations: List[tuple] = []
    for j in range(1 + raw[4] % 3):
        m = raw[4 + 12 * j:16 + 12 * j]
        op, sub, length = OPS[m[0] % len(OPS)], m[1], m[2]
        value = int.from_bytes(m[4:12], "little")
        data = m[4:4 + 1 + length % 8]
        if op == "bytes":
            mutations.append(("bytes", sub, data))
        elif op == "flip":
            mutations.append(("flip", FIELDS[sub % len(FIELDS)], length))
        elif op == "set":
            mutations.append(("set", FIELDS[sub % len(FIELDS)], value))
        elif op == "set_special":
            mutations.append(("set", FIELDS[sub % len(FIELDS)], SPECIAL[length % len(SPECIAL)]))
        elif op == "type":
            mutations.append(("type", sub, value & 0xFFFFFFFF))
        elif op == "head":
            mutations.append(("head", HEADS[sub % len(HEADS)], value))
        elif op == "order":
            mutations.append(("order", sub, length))
        elif op == "mapping":
            mutations.append(("mapping", MAPPINGS[sub % len(MAPPINGS)], value & 0xFFFF))
        elif op == "list":
            mutations.append(("list", FIELDS[sub % len(FIELDS)], value, length))
        else:
            mutations.append(("whole", data))
    return kind_i, pfn_i, mutations


BATCHES = st.tuples(st.binary(min_size=BATCH * CASE_BYTES, max_size=BATCH * CASE_BYTES), st.integers(0, 2 ** 16))

# no shrinking: a failure prints its example and a reproduce blob at once,
# instead of minutes of shrinking in CI
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(HealthCheck), print_blob=True,
                         phases=[Phase.explicit, Phase.reuse, Phase.generate])


def test_fuzz_struct_pages(sample):
    fz = fuzzer_of(sample)

    @FUZZ_SETTINGS
    @given(BATCHES)
    def check(batch):
        raw, render = batch
        cases = [decode_case(raw[i:i + CASE_BYTES]) for i in range(0, len(raw), CASE_BYTES)]
        fz.run(cases, render)

    check()
    COUNTS[fz.release] = fz.pages
    IDENTIFIED[fz.release] = fz.identified
    assert fz.pages >= EXAMPLES * BATCH * 0.9
    print("\n%s: %d struct pages fuzzed (worst pfn: %d reads)" % (fz.release, fz.pages, fz.t.worst_reads))


SUMMARY_EXAMPLES = 150


def test_fuzz_summary(sample):
    """The whole-memory path (--summary: pagewho.survey, fast classifier and
    grouping) over a window of 1024 pfns with ten corrupt struct pages in
    it: no exception, bounded, kinds from KINDS, text and JSON render."""
    from pagewho import survey

    fz = fuzzer_of(sample)
    t, k = fz.t, fz.k

    @settings(max_examples=SUMMARY_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), print_blob=True,
              phases=[Phase.explicit, Phase.reuse, Phase.generate])
    @given(BATCHES)
    def check(batch):
        raw, where = batch
        cases = [decode_case(raw[i:i + CASE_BYTES]) for i in range(0, len(raw), CASE_BYTES)]
        window = (fz.seed(cases[0][0], cases[0][1]) & ~511) if where & 1 else (where * 512) % fz.mm.end_pfn
        t.clear()
        fz.lay(cases, window)
        t.budget(200 * MAX_READS, 10 * MAX_SECONDS)
        try:
            kinds = [kind for _pfn, kind in survey.fast_kinds(k, window, window + 1024)]
            assert set(kinds) <= set(KINDS), set(kinds) - set(KINDS)
            summary = survey.Summary(k)
            summary.collect(start=window, end=window + 1024)
            doc = summary.to_dict()
        except BudgetExceeded as e:
            raise AssertionError("summary of %#x+1024: unbounded (%s)" % (window, e)) from None
        finally:
            t.budget(None, None)
            t.clear()
        text = "\n".join(survey.summary_text(doc))
        assert not CONTROL.search(text), text
        json.loads(to_json(doc))

    check()


def test_fuzz_total():
    """At least TOTAL_WANTED struct pages over the run (when all four
    kernels were fuzzed: a -k selection runs fewer)."""
    if len(COUNTS) < 4:
        pytest.skip("only %d kernels fuzzed in this run: %s" % (len(COUNTS), COUNTS))
    if EXAMPLES < DEFAULT_EXAMPLES:
        pytest.skip("PAGEWHO_FUZZ_EXAMPLES=%d: %d struct pages fuzzed" % (EXAMPLES, sum(COUNTS.values())))
    total = sum(COUNTS.values())
    print("\nfuzzed %d struct pages in all: %s" % (total, COUNTS))
    assert total >= TOTAL_WANTED


# -- kernel strings and JSON -----------------------------------------------------------


@settings(max_examples=2500, deadline=None, derandomize=True, database=None)
@given(st.binary(max_size=300))
def test_clean_any_bytes(raw):
    text = clean(raw)
    assert not CONTROL.search(text), repr(text)
    assert "\x1b" not in text and "\n" not in text
    assert clean(text) == text  # idempotent: cleaning twice changes nothing
    # plain printable ASCII passes unchanged
    printable = bytes(b for b in raw if 0x20 <= b < 0x7F)
    assert clean(printable) == printable.decode("ascii")


@settings(max_examples=2000, deadline=None, derandomize=True, database=None)
@given(st.text(max_size=200))
def test_clean_any_text(s):
    out = clean(s)
    assert not CONTROL.search(out), repr(out)
    assert all(not (0xD800 <= ord(c) < 0xE000) for c in out)


def _containers(children):
    return (st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
            | st.tuples(children, children))


JSONABLE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), st.floats(allow_nan=True),
              st.text(max_size=40), st.binary(max_size=40), st.frozensets(st.integers(0, 99), max_size=4)),
    _containers,
    max_leaves=30,
)


@settings(max_examples=800, deadline=None, derandomize=True, database=None)
@given(JSONABLE, st.sampled_from([0, 2]))
def test_to_json_any_value(value, indent):
    text = to_json(value, indent=indent)
    assert all(0x20 <= ord(c) < 0x7F or c == "\n" for c in text), repr(text)
    back = json.loads(text)
    # strings survive exactly (bytes are cleaned, so compare cleaned)
    if isinstance(value, str):
        assert back == value
    if isinstance(value, bytes):
        assert back == clean(value)
        assert not CONTROL.search(back)
