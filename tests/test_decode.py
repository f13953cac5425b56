"""The decoder's constants and layout, checked on each sample kernel.

The kernel model learns its constants from the dump; these tests check them
against what the same dump says through another channel (VMCOREINFO, or
drgn's own helpers, which are used here as a cross-check only).
"""

from __future__ import annotations

import drgn
import pytest
from drgn.helpers.linux.mm import (
    PageHead,
    PageTail,
    compound_head,
    compound_order,
    for_each_valid_page_range,
)
from samples import open_sample

from pagewho.kernel import kernel_of, parse_release
from pagewho.page import decoder_of


@pytest.fixture(scope="module")
def kd(sample):
    target = open_sample(sample)
    k = kernel_of(target)
    return sample, target, k, decoder_of(k)


def test_release_parses_to_the_suites_kernel_version(kd):
    sample, _, k, _ = kd
    expected = {"bullseye": (5, 10), "bookworm": (6, 1), "trixie": (6, 12)}
    if sample.suite in expected:
        assert k.version[:2] == expected[sample.suite]
    else:
        assert k.version[0] >= 7
    assert parse_release("6.12.38+deb13-cloud-amd64") == (6, 12, 38)


def test_page_flag_bits_match_vmcoreinfo(kd):
    _, _, k, d = kd
    checked = 0
    for key, value in k.vmcoreinfo.items():
        if key.startswith("NUMBER(PG_") and key.endswith(")"):
            name = key[len("NUMBER("):-1]
            if name in d.pageflags:
                assert d.pageflags[name] == int(value), name
                checked += 1
    assert checked >= 3  # PG_lru, PG_private, PG_swapcache at least


def test_page_type_values_of_vmcoreinfo_decode_to_their_type(kd):
    _, _, k, d = kd
    seen = 0
    for name in ("BUDDY", "OFFLINE", "SLAB", "HUGETLB", "UNACCEPTED"):
        value = k.number("PAGE_%s_MAPCOUNT_VALUE" % name)
        if value is not None:
            assert d.types.type_of(value & 0xFFFFFFFF) == name.lower()
            seen += 1
    assert seen >= 2
    # -1, the value of an ordinary page's _mapcount, is no type
    assert d.types.type_of(0xFFFFFFFF) is None


def test_struct_page_offsets_match_drgn(kd):
    _, target, k, d = kd
    page = target.prog.type("struct page")
    assert d.size == drgn.sizeof(page)
    assert d.off_flags == drgn.offsetof(page, "flags")
    assert d.off_refcount == drgn.offsetof(page, "_refcount")
    assert d.off_mapping == drgn.offsetof(page, "mapping")
    assert d.off_head == drgn.offsetof(page, d.head_member)


def test_valid_pfn_ranges_match_drgn(kd):
    _, target, k, d = kd
    ours = list(d.memmap.ranges())
    theirs = [(a, b) for a, b, _ in for_each_valid_page_range(target.prog)]
    # drgn splits at subsections; both must cover the same pfns
    assert sum(b - a for a, b in ours) >= sum(b - a for a, b in theirs)
    for a, b in theirs:
        assert d.memmap.valid(a) and d.memmap.valid(b - 1)


def test_compound_pages_decode_like_drgn(kd):
    """Heads, tails, orders and free buddy heads of a few thousand real
    pages agree with drgn's PageHead/PageTail/compound_order/PageBuddy."""
    sample, target, k, d = kd
    prog = target.prog
    heads = 0
    checked = 0
    for rec in sample.truth["records"]:
        if rec.get("pfn") is None or rec.get("nr_pages", 1) < 2:
            continue
        for pfn in (rec["pfn"], rec["pfn"] + 1, rec["pfn"] + rec["nr_pages"] - 1):
            page = d.read_page(pfn)
            obj = drgn.Object(prog, "struct page *", k.pfn_to_page(pfn))
            assert page.is_head == PageHead(obj), hex(pfn)
            assert page.is_tail == PageTail(obj), hex(pfn)
            assert page.head_address == compound_head(obj).value_(), hex(pfn)
            if page.is_head:
                heads += 1
                assert page.order == compound_order(obj).value_(), hex(pfn)
            checked += 1
    assert heads >= 1, "the truth has no compound page to check"
    buddy_value = k.number("PAGE_BUDDY_MAPCOUNT_VALUE") & 0xFFFFFFFF
    # v6.12+ keeps the type in the top byte only (PGTY_buddy << 24)
    mask = 0xFF000000 if buddy_value & 0x00FFFFFF == 0 else 0xFFFFFFFF
    buddies = 0
    for pfn in range(0, d.memmap.end_pfn, 97):
        if not d.memmap.valid(pfn):
            continue
        page = d.read_page(pfn)
        obj = drgn.Object(prog, "struct page *", k.pfn_to_page(pfn))
        raw = obj.page_type.value_() & 0xFFFFFFFF
        assert (page.page_type == "buddy") == (raw & mask == buddy_value), hex(pfn)
        buddies += page.page_type == "buddy"
    assert buddies > 0
