"""The `pagewho` command, shared by every front end.

A front end builds a :class:`~pagewho.target.Target` and calls :func:`run`
with the user's arguments and a function that writes text.  Everything the
user sees comes from here, so crash, gdb and the command line answer alike.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Callable, Iterable, List, Optional, Tuple

from . import __version__
from .kernel import Kernel, kernel_of
from .memmap import memmap_of
from .owner import PageReport, identify
from .report import SCHEMA, page_dict, page_text
from .target import Target, TargetError
from .text import clean, columns, to_json

Write = Callable[[str], None]

DESCRIPTION = "Say who owns a page frame: buddy, slab, page cache, anon, page table, ..."

EPILOG = """\
PFN arguments: 0x1234 or 4660; ranges 0x1000-0x10ff (inclusive) and
0x1000+256.  Addresses: -p PHYS, -a KERNEL_VADDR (direct map, vmalloc,
kernel image), --page STRUCT_PAGE_ADDR.  A single pfn gets a full report;
several get one line each (-l for full reports).  --json writes the
"pagewho/1" schema (docs/json.md).  --summary classifies every pfn."""

# Ranges bigger than this need --all: a stray "0-0xffffffff" must not hang
# the debugger for an hour.
DEFAULT_MAX_PFNS = 65536


class UsageError(TargetError):
    """A bad argument; reported with the usage line."""


class _Exit(Exception):
    """argparse asked to exit (after --help)."""


class _Parser(argparse.ArgumentParser):
    """argparse that never calls sys.exit() or prints to sys.stderr: inside
    a debugger both would be wrong."""

    def __init__(self, write: Write, **kw) -> None:
        super().__init__(**kw)
        self._write = write

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)

    def exit(self, status: int = 0, message: Optional[str] = None):  # type: ignore[override]
        if message:
            self._write(message)
        raise _Exit()

    def _print_message(self, message: str, file=None) -> None:
        if message:
            self._write(message)


def make_parser(write: Write, prog: str = "pagewho") -> argparse.ArgumentParser:
    p = _Parser(write, prog=prog, description=DESCRIPTION, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pfns", nargs="*", metavar="PFN", help="pfn, A-B or A+N")
    p.add_argument("-p", "--phys", action="append", default=[], metavar="PHYS",
                   help="physical address")
    p.add_argument("-a", "--addr", action="append", default=[], metavar="VADDR",
                   help="kernel virtual address (direct map, vmalloc, kernel image)")
    p.add_argument("--page", action="append", default=[], metavar="ADDR",
                   help="address of a struct page")
    p.add_argument("-s", "--summary", action="store_true",
                   help="classify every valid pfn and show where memory went")
    p.add_argument("--top", type=int, default=10, metavar="N",
                   help="with --summary: how many files/processes/caches to list (default 10)")
    p.add_argument("--map", metavar="FILE",
                   help="with --summary: draw memory by owner along the pfn axis (.svg/.png)")
    p.add_argument("-j", "--json", action="store_true", help="JSON output (schema %s)" % SCHEMA)
    p.add_argument("-l", "--long", action="store_true", help="full report for every pfn")
    p.add_argument("-v", "--verbose", action="store_true", help="also show raw struct page fields")
    p.add_argument("--all", action="store_true",
                   help="allow ranges of more than %d pfns" % DEFAULT_MAX_PFNS)
    p.add_argument("-V", "--version", action="version", version="pagewho " + __version__)
    return p


def parse_number(text: str, what: str) -> int:
    """An integer from decimal or 0x-hex text; a UsageError otherwise."""
    t = text.strip().replace("_", "")
    try:
        value = int(t, 16) if t.lower().startswith("0x") else int(t, 10)
    except ValueError:
        raise UsageError("%s %r is not a number (use decimal or 0x-hex)" % (what, text)) from None
    if value < 0:
        raise UsageError("%s %s is negative" % (what, text))
    if value >= 1 << 64:
        raise UsageError("%s %s does not fit in 64 bits" % (what, text))
    return value


def parse_pfn_arg(text: str) -> Tuple[int, int]:
    """A pfn argument as a half-open range [start, end)."""
    m = re.fullmatch(r"\s*([0-9a-fA-Fx_]+)\s*([-+])\s*([0-9a-fA-Fx_]+)\s*", text)
    if m and not text.strip().startswith("-"):
        a = parse_number(m.group(1), "pfn")
        b = parse_number(m.group(3), "pfn")
        if m.group(2) == "+":
            if b == 0:
                raise UsageError("range %s is empty" % text)
            return a, a + b
        if b < a:
            raise UsageError("range %s ends before it starts" % text)
        return a, b + 1
    a = parse_number(text, "pfn")
    return a, a + 1


def addr_to_pfn(k: Kernel, vaddr: int) -> int:
    """The pfn behind a kernel virtual address (direct map, kernel image,
    or through the kernel page tables for vmalloc and module space)."""
    pfn = k.virt_to_pfn(vaddr)
    if pfn is not None:
        return pfn
    from .pgtable import kernel_virt_to_phys

    phys = kernel_virt_to_phys(k, vaddr)
    if phys is None:
        from .owners.vmalloc import unmapped_address_note

        raise TargetError("address %#x is not mapped in the kernel page tables%s"
                          % (vaddr, unmapped_address_note(k, vaddr)))
    return phys >> k.page_shift


def collect_pfns(k: Kernel, args: argparse.Namespace) -> List[Tuple[str, int, int]]:
    """(input text, start, end) for every pfn range the user asked about."""
    out = []
    for text in args.pfns:
        a, b = parse_pfn_arg(text)
        out.append((text, a, b))
    for text in args.phys:
        pa = parse_number(text, "physical address")
        out.append((text, pa >> k.page_shift, (pa >> k.page_shift) + 1))
    for text in args.addr:
        va = parse_number(text, "address")
        pfn = addr_to_pfn(k, va)
        out.append((text, pfn, pfn + 1))
    for text in args.page:
        pa = parse_number(text, "struct page address")
        pfn = k.page_to_pfn(pa)
        if pfn is None:
            raise UsageError("%s is not the address of a struct page (vmemmap starts at %#x, "
                             "struct page is %d bytes)" % (text, k.vmemmap, k.struct_page_size))
        out.append((text, pfn, pfn + 1))
    return out


def run(target: Target, argv: List[str], write: Write) -> int:
    """Run ``pagewho ARGV`` against ``target``; return an exit status.

    Never raises for a bad argument or unreadable memory: those become one
    line starting with "pagewho: " and a non-zero status.  KeyboardInterrupt
    propagates so the front end can stop cleanly.
    """
    parser = make_parser(write)
    try:
        args = parser.parse_args(argv)
    except _Exit:
        return 0
    except UsageError as e:
        write("pagewho: %s (try pagewho --help)\n" % clean(str(e)))
        return 2
    try:
        k = kernel_of(target)
        memmap_of(k)
        if args.summary:
            from .survey import run_summary

            return run_summary(k, args, write)
        ranges = collect_pfns(k, args)
        if not ranges:
            write("pagewho: no pfn given (try pagewho --help)\n")
            return 2
        total = sum(b - a for _, a, b in ranges)
        if total > DEFAULT_MAX_PFNS and not args.all:
            write("pagewho: %d pfns asked for; use --all for more than %d, or --summary\n"
                  % (total, DEFAULT_MAX_PFNS))
            return 2
        return _report(k, ranges, args, write)
    except UsageError as e:
        write("pagewho: %s (try pagewho --help)\n" % clean(str(e)))
        return 2
    except TargetError as e:
        write("pagewho: %s\n" % clean(str(e)))
        return 1
    except RecursionError:
        write("pagewho: gave up: kernel data loops back on itself (corrupt dump?)\n")
        return 1
    except KeyboardInterrupt:
        raise
    except Exception as e:  # never a traceback in the user's debugger
        if os.environ.get("PAGEWHO_DEBUG"):
            raise
        write("pagewho: internal error: %s: %s (set PAGEWHO_DEBUG=1 for a traceback; please report)\n"
              % (type(e).__name__, clean(str(e))))
        return 3


def _report(k: Kernel, ranges: List[Tuple[str, int, int]], args: argparse.Namespace, write: Write) -> int:
    reports: List[PageReport] = []
    errors = []
    single = len(ranges) == 1 and ranges[0][2] - ranges[0][1] == 1
    mm = memmap_of(k)
    for text, a, b in ranges:
        if b - a == 1:
            pfns: Iterable[int] = (a,)
        else:
            # only the pfns that have a struct page; each run without is one
            # error (a range of 2**64 pfns must not mean 2**64 errors)
            valid = list(mm.ranges(a, b))
            pfns = (pfn for ra, rb in valid for pfn in range(ra, rb))
            ends = [a] + [x for r in valid for x in r] + [b]
            for ga, gb in zip(ends[::2], ends[1::2]):
                if ga < gb:
                    where = ("beyond the last memory section (max pfn %#x)" % (mm.end_pfn - 1)
                             if ga >= mm.end_pfn else "in a memory hole (no memmap)")
                    errors.append({"input": text, "pfn": ga, "last_pfn": gb - 1,
                                   "error": "pfns %#x-%#x are %s" % (ga, gb - 1, where)})
        for pfn in pfns:
            try:
                reports.append(identify(k, pfn))
            except TargetError as e:
                errors.append({"input": text, "pfn": pfn, "error": clean(str(e))})
    if args.json:
        doc = {
            "schema": SCHEMA,
            "kernel": k.release,
            "pages": [page_dict(r) for r in reports],
            "errors": errors,
        }
        write(to_json(doc) + "\n")
    elif single or args.long:
        for i, r in enumerate(reports):
            if i:
                write("\n")
            write("\n".join(page_text(r, args.verbose)) + "\n")
        for e in errors:
            write("pagewho: %s\n" % e["error"])
    else:
        from .report import owner_line

        rows = [["%#x" % r.page.pfn, r.owner.kind, owner_line(r)] for r in reports]
        if rows:
            write(columns(rows, ["PFN", "KIND", "OWNER"]) + "\n")
        for e in errors:
            write("pagewho: %s\n" % e["error"])
    return 1 if errors and not reports else 0


def owner_kind(target: Target, pfn: int) -> str:
    """The owner kind of one pfn ("slab", "anon", ...), for scripts such as
    gdb's $pagewho_owner(); raises TargetError for an invalid pfn."""
    return identify(kernel_of(target), pfn).owner.kind


def report_of(target: Target, pfn: int) -> PageReport:
    """The full :class:`PageReport` of one pfn, for tests and scripts."""
    return identify(kernel_of(target), pfn)
