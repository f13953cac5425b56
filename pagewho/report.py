"""Rendering answers: text for people, a versioned dict for ``--json``.

JSON schema "pagewho/1" (documented in docs/json.md): a top-level object
``{"schema", "kernel", "pages": [...], "errors": [...]}``; each page is
:func:`page_dict`.  Fields are only ever added within a schema version.
"""

from __future__ import annotations

from typing import Any, Dict, List

from .owner import PageReport
from .text import clean

SCHEMA = "pagewho/1"

#: one-line descriptions of the kinds, for text output
KIND_TEXT = {
    "buddy": "free (buddy allocator)",
    "pcp": "free (per-cpu page list)",
    "free": "free (refcount 0, on no free list)",
    "slab": "slab",
    "large_kmalloc": "large kmalloc",
    "pgtable": "page table",
    "anon": "anonymous memory",
    "ksm": "KSM-merged anonymous memory",
    "pagecache": "page cache",
    "shmem": "shmem/tmpfs",
    "swapcache": "swap cache",
    "hugetlb": "hugetlb",
    "vmalloc": "vmalloc",
    "kstack": "kernel stack",
    "percpu": "per-cpu memory",
    "page_pool": "page_pool (network)",
    "zsmalloc": "zsmalloc",
    "movable": "movable non-LRU page",
    "reserved": "reserved",
    "zero": "the zero page",
    "offline": "offline (balloon / memory offlining)",
    "guard": "guard page (debug_pagealloc)",
    "unaccepted": "unaccepted memory",
    "unknown": "unknown",
    "corrupt": "corrupt struct page",
}


def page_dict(r: PageReport) -> Dict[str, Any]:
    """The JSON object of one pfn (schema "pagewho/1")."""
    p, h, o = r.page, r.head, r.owner
    k = r.k
    out: Dict[str, Any] = {
        "pfn": p.pfn,
        "phys": p.pfn << k.page_shift,
        "page": p.address,
        "zone": r.zone(),
        "flags": r.flags(),
        "flags_raw": p.flags,
        "page_type": p.page_type,
        "refcount": p.refcount,
        "mapcount": p.mapcount if p.page_type is None else None,
        "mapping": p.mapping,
        "index": p.index,
        "private": p.private,
        "compound": None,
        "owner": {"kind": o.kind, "text": KIND_TEXT.get(o.kind, o.kind)},
        "notes": list(o.notes),
    }
    if p.is_tail or p.is_head:
        out["compound"] = {
            "head_pfn": h.pfn,
            "head_page": h.address,
            "order": r.head_order(),
            "nr_pages": r.folio_pages(),
            "tail": p.is_tail,
            "head_flags": r.head_flags() if p.is_tail else None,
        }
    out["owner"].update(o.detail)
    return out


def _fmt(value: Any, key: str = "") -> str:
    """A detail value for people: addresses in hex, lists and dicts inline."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return "%#x" % value if value > 0xFFFF and key not in _DECIMAL else str(value)
    if isinstance(value, bytes):
        return clean(value)
    if isinstance(value, (list, tuple)):
        return "; ".join(_fmt(v, key) for v in value)
    if isinstance(value, dict):
        return " ".join("%s=%s" % (k, _fmt(v, k)) for k, v in value.items() if v is not None)
    if value is None:
        return "-"
    return clean(str(value))


# detail keys whose integers read better in decimal however large
_DECIMAL = frozenset(("pid", "pages", "nr_pages", "size", "bytes", "count", "objects", "inuse",
                      "ino", "offset", "order", "index", "cpu", "node"))


def owner_line(r: PageReport) -> str:
    """The owner in one line: kind text, then its summary or details."""
    o = r.owner
    text = KIND_TEXT.get(o.kind, o.kind)
    summary = o.detail.get("summary")
    if summary:
        return "%s: %s" % (text, clean(str(summary)))
    parts = ["%s %s" % (key.replace("_", " "), _fmt(v, key)) for key, v in o.detail.items()
             if key != "summary" and not isinstance(v, (list, dict))]
    return text + (": " + ", ".join(parts) if parts else "")


def page_text(r: PageReport, verbose: bool = False) -> List[str]:
    """Lines describing one pfn for people."""
    p, h, o = r.page, r.head, r.owner
    k = r.k
    lines = []
    zone = r.zone()
    lines.append("pfn %#x  phys %#x  page %#x%s" % (
        p.pfn, p.pfn << k.page_shift, p.address, "  zone " + zone if zone else ""))
    lines.append("  owner    %s" % owner_line(r))
    if verbose:
        for key, value in o.detail.items():
            if key != "summary" and value not in (None, [], {}):
                if isinstance(value, list) and value and isinstance(value[0], dict):
                    for item in value:
                        lines.append("  %-8s %s" % (key, _fmt(item)))
                else:
                    lines.append("  %-8s %s" % (key, _fmt(value, key)))
    flags = "|".join(r.flags()) or "-"
    counts = "refcount %d" % p.refcount
    if p.page_type is None:
        counts += "  mapcount %d" % p.mapcount
    else:
        counts += "  page_type %s" % p.page_type
    lines.append("  flags    %s" % flags)
    lines.append("  counts   %s" % counts)
    if p.is_tail or p.is_head:
        lines.append("  folio    %s pfn %#x, order %d (%d pages)%s" % (
            "head" if p.is_head else "tail of head",
            h.pfn, r.head_order(), r.folio_pages(),
            "" if p.is_head else ", head flags " + ("|".join(r.head_flags()) or "-")))
    if verbose or o.kind in ("unknown", "corrupt"):
        lines.append("  fields   mapping %#x  index %#x  private %#x" % (p.mapping, p.index, p.private))
    for note in o.notes:
        lines.append("  note     %s" % clean(note))
    return lines
