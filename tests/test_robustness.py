"""When things go wrong: bad input, damaged dumps, a wrong vmlinux, Ctrl-C,
hostile kernel strings, and no write path (issue 6, docs/errors.md).

Every case runs on the real sample dumps (vmcores-sample/lab.py) and checks
the answer's exact shape: ONE line starting with "pagewho: ", no
traceback, the documented exit status (2 for a bad argument, 1 for what the
dump cannot answer, 130 for Ctrl-C) -- and that the next command on the
same target still works.
"""

from __future__ import annotations

import ast
import json
import re
import struct
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import pytest
from overlay import OverlayTarget
from samples import open_sample

from pagewho import cli, command
from pagewho.drgn_target import DrgnTarget
from pagewho.kernel import kernel_of
from pagewho.memmap import SECTION_HAS_MEM_MAP, memmap_of
from pagewho.pgtable import kernel_virt_to_phys
from pagewho.target import Target, TargetError

REPO = Path(__file__).resolve().parents[1]
#: C0 controls but newline, DEL, C1 controls: nothing of these may reach a terminal
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f\x80-\x9f]")


# -- helpers ---------------------------------------------------------------------


def run(target: Target, *argv: str) -> Tuple[int, str]:
    out: List[str] = []
    rc = command.run(target, list(argv), out.append)
    return rc, "".join(out)


def one_line(rc: int, text: str, status: int, *needles: str) -> str:
    """Assert ``text`` is exactly one "pagewho: ..." line and ``rc`` is ``status``."""
    assert "Traceback" not in text, text
    lines = text.splitlines()
    assert len(lines) == 1, "expected one line, got:\n" + text
    line = lines[0]
    assert line.startswith("pagewho: "), line
    assert rc == status, (rc, line)
    assert not CONTROL.search(line), repr(line)
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def good_pfn(sample) -> int:
    """A planted page cache pfn (present in every sample), else pfn 0x1000."""
    for rec in sample.truth.get("records", []):
        if rec.get("kind") == "pagecache" and isinstance(rec.get("pfn"), int):
            return rec["pfn"]
    return 0x1000


def still_works(target: Target, sample, expect_kind: Optional[str] = None) -> None:
    pfn = good_pfn(sample)
    rc, text = run(target, hex(pfn))
    assert rc == 0, text
    assert text.startswith("pfn %#x " % pfn), text
    assert "Traceback" not in text
    if expect_kind:
        assert "owner    " + expect_kind in text, text


def fresh(sample, kdump: bool = False, **kw) -> OverlayTarget:
    """A private target over the sample's dump (its own Kernel, its own caches)."""
    return OverlayTarget(open_sample(sample, kdump), **kw)


def cli_run(capsys, argv: List[str]) -> Tuple[int, str]:
    """The console script: status, and stdout + stderr together."""
    rc = cli.main(argv)
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


# -- pfns that have no struct page ----------------------------------------------------


def test_pfn_beyond_memory(sample):
    t = open_sample(sample)
    mm = memmap_of(kernel_of(t))
    for pfn in (mm.end_pfn, mm.end_pfn + 12345, 1 << 52, (1 << 64) - 1):
        rc, text = run(t, hex(pfn))
        one_line(rc, text, 1, "pfn %#x is beyond the last memory section" % pfn,
                 "max pfn %#x" % (mm.end_pfn - 1))
    rc, text = run(t, "-p", hex(mm.end_pfn << 12))
    one_line(rc, text, 1, "beyond the last memory section")
    still_works(t, sample)


def _hide_section(t: OverlayTarget, nr: int) -> None:
    """Make section ``nr`` look like a hole: clear SECTION_HAS_MEM_MAP in its
    mem_section entry (as for a pfn range with no RAM)."""
    k = kernel_of(t.inner)
    ms_size = k.sizeof("struct mem_section")
    per_root = k.page_size // ms_size
    roots = k.u64(k.sym("mem_section"))
    root = k.u64(roots + (nr // per_root) * 8)
    entry = root + (nr % per_root) * ms_size + k.off("struct mem_section", "section_mem_map")
    t.patch(entry, struct.pack("<Q", k.u64(entry) & ~SECTION_HAS_MEM_MAP))


def test_pfn_in_memory_hole(sample):
    t = fresh(sample)
    real = memmap_of(kernel_of(t.inner))
    keep = real.section_of(good_pfn(sample))
    holes = [nr for nr in range(max(real.sections)) if nr not in real.sections]
    if holes:  # a real hole below the last section (e.g. the PCI hole of a >3 GiB guest)
        nr = holes[0]
    else:      # 1 GiB guests have none: make one from a real section
        nr = next(n for n in sorted(real.sections, reverse=True)[1:] if n != keep and n > 0)
        _hide_section(t, nr)
    mm = memmap_of(kernel_of(t))
    assert nr not in mm.sections
    first = nr << mm.pfn_section_shift
    last = first + mm.pages_per_section - 1
    for pfn in (first, first + 77, last):
        rc, text = run(t, hex(pfn))
        one_line(rc, text, 1, "pfn %#x is in a memory hole (section %d has no memmap)" % (pfn, nr))
    # a range over the hole: one error for the whole run, rows for the rest
    rc, text = run(t, "%#x-%#x" % (first - 2, last + 2))
    assert rc == 0 and "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("pagewho: ")]
    assert errors == ["pagewho: pfns %#x-%#x are in a memory hole (no memmap)" % (first, last)], text
    assert "%#x " % (first - 1) in text and "%#x " % (last + 1) in text
    # a range entirely inside it
    rc, text = run(t, "%#x+16" % first)
    one_line(rc, text, 1, "in a memory hole")
    still_works(t, sample)


def _sample_4g():
    """The lab's 4 GiB bookworm guest, only when already built (it is the
    benchmark's; building it here would take minutes)."""
    import lab

    suite, mem_mb = lab.VARIANTS["bookworm-4g"]
    for kdir in sorted((lab.cache_root() / "vmcores").glob("*")):
        sdir = kdir / ("mem-%dM" % mem_mb)
        info = kdir / "kernel.json"
        if (sdir / "complete").exists() and info.exists() and json.loads(info.read_text()).get("suite") == suite:
            return lab.Sample(suite, kdir, sdir)
    pytest.skip("the 4 GiB sample (bookworm-4g) is not built")


def test_pfn_in_the_pci_hole():
    """A >3 GiB guest has no RAM between 3 and 4 GiB: real sections without
    memmap below the last one."""
    s = _sample_4g()
    t = open_sample(s)
    mm = memmap_of(kernel_of(t))
    holes = [nr for nr in range(max(mm.sections)) if nr not in mm.sections]
    assert holes, "a 4 GiB guest with no hole below 4 GiB?"
    for nr in (holes[0], holes[-1]):
        pfn = nr << mm.pfn_section_shift
        rc, text = run(t, hex(pfn + 5))
        one_line(rc, text, 1, "pfn %#x is in a memory hole (section %d has no memmap)" % (pfn + 5, nr))
    first, last = holes[0] << mm.pfn_section_shift, ((holes[-1] + 1) << mm.pfn_section_shift) - 1
    rc, text = run(t, "-p", hex(0xC0000000 + 0x1234))
    one_line(rc, text, 1, "in a memory hole")
    rc, text = run(t, "%#x-%#x" % (first - 1, last + 1), "--all")
    errors = [line for line in text.splitlines() if line.startswith("pagewho: ")]
    assert rc == 0 and errors == ["pagewho: pfns %#x-%#x are in a memory hole (no memmap)" % (first, last)]
    rc, text = run(t, hex(first - 1))
    assert rc == 0 and text.startswith("pfn %#x " % (first - 1))


def test_huge_range_is_bounded(sample):
    """'--all' over 2**64 pfns used to loop (one error per pfn)."""
    t = open_sample(sample)
    mm = memmap_of(kernel_of(t))
    rc, text = run(t, "%#x-0xffffffffffffffff" % (mm.end_pfn - 2), "--all")
    assert rc == 0 and "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("pagewho: ")]
    assert errors == ["pagewho: pfns %#x-0xffffffffffffffff are beyond the last memory section "
                      "(max pfn %#x)" % (mm.end_pfn, mm.end_pfn - 1)], text
    rc, text = run(t, "%#x-0xffffffffffffffff" % mm.end_pfn, "--all", "--json")
    doc = json.loads(text)
    assert rc == 1 and doc["pages"] == [] and len(doc["errors"]) == 1
    assert doc["errors"][0]["last_pfn"] == (1 << 64) - 1
    still_works(t, sample)


# -- arguments that are not numbers ------------------------------------------------

BAD_ARGS = [
    (["abc"], "pfn 'abc' is not a number"),
    (["0xZZ"], "is not a number"),
    ([""], "is not a number"),
    (["1.5"], "is not a number"),
    (["1e5"], "is not a number"),
    (["0x"], "is not a number"),
    (["12abc"], "is not a number"),
    (["-5"], "pfn -5 is negative"),
    (["-0x10"], "unrecognized arguments: -0x10"),
    (["0x10000000000000000"], "does not fit in 64 bits"),
    (["99999999999999999999999999"], "does not fit in 64 bits"),
    (["0x10-0x5"], "ends before it starts"),
    (["5+0"], "is empty"),
    (["0x1000-"], "is not a number"),
    (["0-0xffffffffffffffff"], "use --all"),
    (["0x1000+0xffffffffffffffff"], "use --all"),
    (["-p", "-1"], "physical address -1 is negative"),
    (["-p", "0x1ffffffffffffffff"], "does not fit in 64 bits"),
    (["-a", "kernel"], "address 'kernel' is not a number"),
    (["--page", "0x"], "is not a number"),
    (["--page"], "expected one argument"),
    (["--top", "x", "--summary"], "invalid int value"),
    (["--no-such-option"], "unrecognized arguments"),
    (["\x1b[2J\x07"], "is not a number"),
    ([], "no pfn given"),
]


@pytest.mark.parametrize("argv,needle", BAD_ARGS, ids=[repr(a) for a, _ in BAD_ARGS])
def test_bad_argument(sample_bookworm, argv, needle):
    t = open_sample(sample_bookworm)
    rc, text = run(t, *argv)
    line = one_line(rc, text, 2, needle)
    if needle != "use --all":
        assert line.endswith("(try pagewho --help)"), line
    still_works(t, sample_bookworm)


def test_bad_arguments_every_kernel(sample):
    """The same refusals on every kernel (parsing needs no kernel, but the
    refusal must come before any read)."""
    t = open_sample(sample)
    for argv, needle in BAD_ARGS[:10]:
        rc, text = run(t, *argv)
        one_line(rc, text, 2, needle)
    still_works(t, sample)


def test_bad_arguments_at_the_command_line(sample_bookworm, capsys):
    s = sample_bookworm
    base = ["--vmcore", str(s.vmcore_elf), "--vmlinux", str(s.vmlinux)]
    rc, text = cli_run(capsys, base + ["0xZZ"])
    one_line(rc, text, 2, "is not a number")
    rc, text = cli_run(capsys, base + ["-5"])
    one_line(rc, text, 2, "negative")
    rc, text = cli_run(capsys, ["--vmcore", "/nonexistent/vmcore", "0x1000"])
    one_line(rc, text, 2, "/nonexistent/vmcore: no such file")
    rc, text = cli_run(capsys, ["--vmcore", str(s.vmcore_elf), "--vmlinux", "/nonexistent/vmlinux", "1"])
    one_line(rc, text, 2, "no such file")
    rc, text = cli_run(capsys, ["--vmcore", str(s.vmlinux), "--vmlinux", str(s.vmlinux), "1"])
    one_line(rc, text, 1, "cannot open")
    rc, text = cli_run(capsys, base + [hex(good_pfn(s))])
    assert rc == 0 and text.startswith("pfn ")


# -- addresses that are not what they claim ----------------------------------------


def test_page_address_that_is_not_a_struct_page(sample):
    t = open_sample(sample)
    k = kernel_of(t)
    mm = memmap_of(k)
    size = k.struct_page_size
    for addr in (k.vmemmap + 1, k.vmemmap + 5 * size + 8, k.vmemmap - size, k.page_offset,
                 k.pfn_to_virt(good_pfn(sample)), 0, 0xFFFFFFFF81000000):
        rc, text = run(t, "--page", hex(addr))
        one_line(rc, text, 2, "%#x is not the address of a struct page" % addr,
                 "vmemmap starts at %#x" % k.vmemmap, "struct page is %d bytes" % size)
    # aligned, but past the memmap
    rc, text = run(t, "--page", hex(k.vmemmap + mm.end_pfn * size))
    one_line(rc, text, 1, "beyond the last memory section")
    rc, text = run(t, "--page", hex(k.pfn_to_page(good_pfn(sample))))
    assert rc == 0 and text.startswith("pfn %#x " % good_pfn(sample)), text
    still_works(t, sample)


def test_unmapped_kernel_address(sample):
    t = open_sample(sample)
    k = kernel_of(t)
    candidates = [k.vmalloc_start + (31 << 40), k.vmalloc_start + (20 << 40) + 0x1234, 0xFFFF800000000000]
    tried = 0
    for addr in candidates:
        if k.virt_to_pfn(addr) is not None or kernel_virt_to_phys(k, addr) is not None:
            continue
        tried += 1
        rc, text = run(t, "-a", hex(addr))
        one_line(rc, text, 1, "address %#x is not mapped in the kernel page tables" % addr)
    assert tried >= 2
    for addr in (0x1000, 0x7F0000000000):  # user space: not in the kernel's tables
        rc, text = run(t, "-a", hex(addr))
        one_line(rc, text, 1, "is not mapped")
    # mapped ones still work: the direct map, and the kernel image
    rc, text = run(t, "-a", hex(k.pfn_to_virt(good_pfn(sample)) + 0x123))
    assert rc == 0 and text.startswith("pfn %#x " % good_pfn(sample)), text
    rc, text = run(t, "-a", hex(k.sym("init_uts_ns")))
    assert rc == 0 and "owner    reserved" in text, text
    still_works(t, sample)


def test_vmalloc_address_is_not_taken_for_the_direct_map(sample):
    """Before 6e64c81 an address in the 64 TiB after page_offset_base was
    taken for the direct map even when KASLR put vmalloc_base there."""
    k = kernel_of(open_sample(sample))
    assert k.virt_to_pfn(k.vmalloc_start) is None
    assert k.virt_to_pfn(k.vmalloc_start + 0x1000) is None
    assert k.virt_to_pfn(k.pfn_to_virt(0x1234)) == 0x1234


# -- filtered, damaged, truncated dumps ----------------------------------------------

USER_KINDS = ("pagecache", "file-mmap", "pagecache-dirty", "shmem", "anon", "ksm", "swapcache", "thp")


def test_filtered_dump_classifies_from_struct_page(sample):
    """makedumpfile -d 31 drops page cache, user and free pages but keeps the
    memmap: pagewho still answers from struct page (the same answer as the
    full dump) and says that the page's contents are missing."""
    if not Path(sample.vmcore_kdump).exists():
        pytest.skip("no kdump-compressed dump for %s" % sample.suite)
    kd = open_sample(sample, kdump=True)
    elf = open_sample(sample)
    seen = {}
    for rec in sample.truth["records"]:
        if rec["kind"] in USER_KINDS and isinstance(rec.get("pfn"), int):
            seen.setdefault(rec["kind"], rec["pfn"])
    assert seen, "no planted user pages"
    noted = 0
    for kind, pfn in seen.items():
        rc, text = run(kd, hex(pfn))
        assert rc == 0 and "Traceback" not in text, text
        full = command.report_of(elf, pfn).owner
        filt = command.report_of(kd, pfn).owner
        assert filt.kind == full.kind, (kind, pfn, filt, full)
        if any("contents are not in the dump" in n for n in filt.notes):
            noted += 1
            assert "note     the page's own contents are not in the dump" in text, text
        rc, text = run(kd, hex(pfn), "--json")
        page = json.loads(text)["pages"][0]
        assert page["owner"]["kind"] == full.kind
    assert noted, "the -d 31 dump kept every planted user page?"
    still_works(kd, sample)


def test_struct_page_missing_from_the_dump(sample):
    t = fresh(sample)
    k = kernel_of(t)
    pfn = good_pfn(sample) ^ 1
    page = k.pfn_to_page(pfn)
    t.hide(page, page + k.struct_page_size)
    rc, text = run(t, hex(pfn))
    one_line(rc, text, 1, "struct page of pfn %#x at %#x is not in the dump" % (pfn, page))
    rc, text = run(t, hex(pfn), "--json")
    doc = json.loads(text)
    assert rc == 1 and doc["pages"] == [] and "not in the dump" in doc["errors"][0]["error"]
    still_works(t, sample)


def test_owner_structures_missing_from_the_dump(sample):
    """The page is there but what names its owner is not: same kind, and a
    note saying what could not be read."""
    t = fresh(sample)
    k = kernel_of(t)
    pfn = good_pfn(sample)
    before = command.report_of(open_sample(sample), pfn).owner
    mapping = command.report_of(open_sample(sample), pfn).head.mapping & ~3
    t.hide(mapping, mapping + 4096)
    rc, text = run(t, hex(pfn))
    assert rc == 0 and "Traceback" not in text, text
    after = command.report_of(t, pfn).owner
    assert after.kind == before.kind
    assert any("not in the dump" in n for n in after.notes), after.notes
    assert "note     could not name the owner: memory at" in text, text
    t.clear()
    k.memo.clear()


def _truncated_copy(src: Path, dst: Path, fraction: float) -> Path:
    size = src.stat().st_size
    want = int(size * fraction)
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        while want > 0:
            chunk = fi.read(min(want, 16 << 20))
            if not chunk:
                break
            fo.write(chunk)
            want -= len(chunk)
    return dst


@pytest.fixture
def scratch(tmp_path):
    """tmp_path, emptied afterwards: truncated copies of 1 GiB dumps should
    not pile up in pytest's kept temporary directories."""
    yield tmp_path
    for f in tmp_path.iterdir():
        if f.is_file():
            f.unlink()


def test_truncated_elf_vmcore(sample, scratch, capsys):
    tmp_path = scratch
    trunc = _truncated_copy(Path(sample.vmcore_elf), tmp_path / "vmcore.elf", 0.6)
    argv = ["--vmcore", str(trunc), "--vmlinux", str(sample.vmlinux), hex(good_pfn(sample))]
    rc, text = cli_run(capsys, argv)
    first = one_line(rc, text, 1, "the dump file is truncated (%d of " % trunc.stat().st_size)
    # the same target, asked again: the same one line, no traceback, no hang
    t = DrgnTarget.open(str(trunc), str(sample.vmlinux))
    for argv2 in ([hex(good_pfn(sample))], ["0x1000-0x1010"], ["--json", "5"]):
        rc, text = run(t, *argv2)
        assert one_line(rc, text, 1, "truncated") == first
    still_works(open_sample(sample), sample)


def test_truncated_kdump_vmcore(sample, scratch, capsys):
    tmp_path = scratch
    if not Path(sample.vmcore_kdump).exists():
        pytest.skip("no kdump-compressed dump for %s" % sample.suite)
    trunc = _truncated_copy(Path(sample.vmcore_kdump), tmp_path / "vmcore.kdump", 0.6)
    argv = ["--vmcore", str(trunc), "--vmlinux", str(sample.vmlinux), hex(good_pfn(sample))]
    rc, text = cli_run(capsys, argv)
    size = trunc.stat().st_size
    one_line(rc, text, 1, "not in the dump: the dump file is truncated (%d of " % size)
    rc, text = cli_run(capsys, argv[:-1] + ["0-0x3ffff", "--all", "--json"])
    one_line(rc, text, 1, "the dump file is truncated (%d of " % size)
    # cut just short of the end: the file may open, the missing tail is named
    trunc = _truncated_copy(Path(sample.vmcore_kdump), tmp_path / "vmcore2.kdump", 0.995)
    t = DrgnTarget.open(str(trunc), str(sample.vmlinux))
    assert t.truncated == (trunc.stat().st_size, Path(sample.vmcore_kdump).stat().st_size)
    rc, text = run(t, "0x3ff80-0x3ffff")  # the top of memory: the end of the file
    assert "Traceback" not in text
    if rc:
        one_line(rc, text, 1, "truncated")
    still_works(open_sample(sample), sample)


# -- a vmlinux that does not match the dump ------------------------------------------------


def _other_samples(sample):
    """Complete lab samples of other kernels (never built from here)."""
    import lab

    root = lab.cache_root() / "vmcores"
    out = []
    for kdir in sorted(root.iterdir()) if root.exists() else []:
        if kdir.name != sample.release and (kdir / "complete").exists() and (kdir / "vmlinux").exists():
            out.append(kdir)
    return out


def test_vmlinux_of_another_kernel(sample, capsys):
    others = _other_samples(sample)
    if not others:
        pytest.skip("no other complete sample to take a vmlinux from")
    for kdir in others[:2]:
        other = kdir.name
        for dump in (sample.vmcore_elf, sample.vmcore_kdump):
            if not Path(dump).exists():
                continue
            argv = ["--vmcore", str(dump), "--vmlinux", str(kdir / "vmlinux"), hex(good_pfn(sample))]
            rc, text = cli_run(capsys, argv)
            one_line(rc, text, 1, "does not match the dump", "the dump is Linux %s" % sample.release,
                     "the vmlinux is Linux %s" % other)
            with pytest.raises(TargetError) as e:
                DrgnTarget.open(str(dump), str(kdir / "vmlinux"))
            assert sample.release in str(e.value) and other in str(e.value)
    still_works(open_sample(sample), sample)


def _with_release(info: str, release: str) -> str:
    return re.sub(r"(?m)^OSRELEASE=.*$", "OSRELEASE=" + release, info)


def test_mismatch_detected_by_the_core(sample):
    """Kernel() refuses a vmlinux that is not the memory's kernel, whatever the
    target (drgn, gdb, crash all go through it): checked with targets that
    pretend what a foreign vmlinux would look like."""
    inner = open_sample(sample)
    info = inner.vmcoreinfo()
    assert info and "OSRELEASE=%s" % sample.release in info
    # the dump says another release
    t = OverlayTarget(inner, info=_with_release(info, "9.9.9-other"))
    rc, text = run(t, hex(good_pfn(sample)))
    one_line(rc, text, 1, "the vmlinux does not match the dump: the dump is Linux 9.9.9-other (VMCOREINFO)",
             "the vmlinux is %s" % sample.release)
    rc2, text2 = run(t, "--summary")  # every command refuses, alike
    assert (rc2, text2) == (rc, text)
    # symbols of another build: init_uts_ns is elsewhere
    for shift in (0x200000, -0x1000):
        t = OverlayTarget(inner, symbol_shift=shift, vmlinux_release=None)
        rc, text = run(t, hex(good_pfn(sample)))
        one_line(rc, text, 1, "does not match the dump: the dump is Linux %s (VMCOREINFO)" % sample.release)
    # ... and what the vmlinux file says, when the target can tell
    t = OverlayTarget(inner, symbol_shift=0x200000, vmlinux_release="5.4.0-1-amd64")
    rc, text = run(t, hex(good_pfn(sample)))
    one_line(rc, text, 1, "the vmlinux is 5.4.0-1-amd64")
    # no VMCOREINFO (a live gdbstub without it): linux_banner decides
    t = OverlayTarget(inner, info=None, symbol_shift=0x200000, vmlinux_release=None)
    rc, text = run(t, hex(good_pfn(sample)))
    one_line(rc, text, 1, "does not match the dump")
    t = OverlayTarget(inner, info=None)
    still_works(t, sample)
    # the release read from memory is not the dump's: refused, both shown
    k = kernel_of(inner)
    uts = k.sym("init_uts_ns") + k.off("struct uts_namespace", "name.release")
    t = OverlayTarget(inner)
    t.patch(uts, b"4.19.0-27-amd64\0")
    rc, text = run(t, "1")
    one_line(rc, text, 1, "the dump is Linux %s" % sample.release, "the vmlinux is")
    still_works(inner, sample)


def test_internal_error_is_one_line(sample_bookworm, monkeypatch):
    """A bug (here: a target method that raises something unexpected) is one
    line with status 3; PAGEWHO_DEBUG=1 lets the traceback through."""

    class Broken(OverlayTarget):
        def vmcoreinfo(self):
            raise RuntimeError("boom \x1b[2J")

    t = Broken(open_sample(sample_bookworm))
    monkeypatch.delenv("PAGEWHO_DEBUG", raising=False)
    rc, text = run(t, "0x1000")
    one_line(rc, text, 3, "pagewho: internal error: RuntimeError: boom \\x1b[2J", "PAGEWHO_DEBUG=1")
    monkeypatch.setenv("PAGEWHO_DEBUG", "1")
    with pytest.raises(RuntimeError):
        run(t, "0x1000")
    monkeypatch.delenv("PAGEWHO_DEBUG")
    still_works(open_sample(sample_bookworm), sample_bookworm)


# -- Ctrl-C ---------------------------------------------------------------------------------


def _kinds(target: Target, sample) -> List[str]:
    pfns = [r["pfn"] for r in sample.truth["records"] if isinstance(r.get("pfn"), int)][:12]
    return [command.owner_kind(target, pfn) for pfn in pfns]


@pytest.mark.parametrize("phase", [0, 1, 2, 3])
def test_ctrl_c(sample, monkeypatch, capsys, phase):
    """Ctrl-C during a range or a summary, early or late: one line, status
    130; the same target then answers as if nothing had happened."""
    import importlib.util

    s = sample
    base = ["--vmcore", str(s.vmcore_elf), "--vmlinux", str(s.vmlinux)]
    # reads before the interrupt: ranges read per pfn, so fixed counts reach
    # deep into them; a summary reads in bulk, so a share of what it needs
    commands = [(["0-0xfffff", "--all"], [1, 60, 900, 6000][phase]),
                (["0-0xfffff", "--all", "--json"], [2, 90, 1500, 9000][phase])]
    if importlib.util.find_spec("pagewho.survey") is not None:
        probe = fresh(s)
        run(probe, "--summary")
        commands.append((["--summary"], max(1, int(probe.reads * [0, 0.3, 0.7, 0.97][phase]))))
    truth_kinds = _kinds(fresh(s), s)
    for args, after in commands:
        t = fresh(s)
        t.interrupt_after = after
        monkeypatch.setattr(DrgnTarget, "open", classmethod(lambda cls, vmcore, vmlinux, t=t: t))
        rc, text = cli_run(capsys, base + args)
        one_line(rc, text, 130, "pagewho: interrupted")
        t.interrupt_after = None
        assert _kinds(t, s) == truth_kinds, args
        still_works(t, s)
        if args == ["--summary"]:
            rc, text = run(t, "--summary")
            assert rc == 0 and "pages classified" in text


def test_ctrl_c_while_loading(sample_bookworm, monkeypatch, capsys):
    """Ctrl-C while drgn loads the debug info (it takes seconds)."""
    s = sample_bookworm

    def interrupted(cls, vmcore, vmlinux):
        raise KeyboardInterrupt

    monkeypatch.setattr(DrgnTarget, "open", classmethod(interrupted))
    rc, text = cli_run(capsys, ["--vmcore", str(s.vmcore_elf), "--vmlinux", str(s.vmlinux), "0x1000"])
    one_line(rc, text, 130, "pagewho: interrupted")
    monkeypatch.undo()
    rc, text = cli_run(capsys, ["--vmcore", str(s.vmcore_elf), "--vmlinux", str(s.vmlinux), hex(good_pfn(s))])
    assert rc == 0 and text.startswith("pfn ")


def test_ctrl_c_reaches_the_front_end(sample):
    """command.run lets KeyboardInterrupt through (the front end owns it:
    the CLI exits 130, gdb and crash return to their prompt)."""
    t = fresh(sample)
    t.interrupt_after = 30
    with pytest.raises(KeyboardInterrupt):
        run(t, "0-0xffff")
    t.interrupt_after = None
    still_works(t, sample)


# -- safety: hostile kernel strings ------------------------------------------------------------

EVIL = b"\x1b[31mEVIL\x1b]0;pwned\x07\r\n\x08\x9b2J\xff\xfe"


def _strings_in(obj) -> List[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in list(obj.values()) + list(obj.keys()) for s in _strings_in(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings_in(v)]
    return []


def _assert_clean_output(target: Target, pfn: int, marker: str) -> None:
    for argv in ([hex(pfn)], [hex(pfn), "-v"], ["%#x+2" % pfn], ["%#x+2" % pfn, "-l"]):
        rc, text = run(target, *argv)
        assert rc == 0, text
        assert "\x1b" not in text and not CONTROL.search(text), repr(text)
        assert marker in text, text
    rc, text = run(target, hex(pfn), "--json")
    assert rc == 0
    assert all(32 <= ord(c) < 127 or c == "\n" for c in text), "JSON output is not plain ASCII"
    doc = json.loads(text)
    for s in _strings_in(doc):
        assert not CONTROL.search(s), "a control character survives JSON decoding: %r" % s


def test_hostile_task_comm(sample):
    """A task's comm full of escape sequences, overlaid on real memory."""
    from drgn.helpers.linux.pid import find_task

    inner = open_sample(sample)
    rec = next((r for r in sample.truth["records"] if r["kind"] == "anon" and r.get("pid")), None)
    if rec is None:
        pytest.skip("no planted anon page")
    task = find_task(inner.prog, rec["pid"])
    t = fresh(sample)
    t.patch(task.comm.address_, EVIL[:15] + b"\0")
    _assert_clean_output(t, rec["pfn"], "EVIL")
    # the same task's kernel stack names it too
    k = kernel_of(inner)
    stack = task.stack.value_()
    pfn = k.virt_to_pfn(stack)
    if pfn is None:
        phys = kernel_virt_to_phys(k, stack)
        pfn = None if phys is None else phys >> k.page_shift
    assert pfn is not None
    if command.owner_kind(inner, pfn) == "kstack":
        _assert_clean_output(t, pfn, "EVIL")


def test_hostile_slab_cache_name(sample):
    """A slab cache whose name is full of escape sequences."""
    inner = open_sample(sample)
    k = kernel_of(inner)
    from pagewho.scan import scan

    mm = memmap_of(k)
    start = min(mm.sections) << mm.pfn_section_shift
    pfn = next(p.pfn for p, _h, kind in scan(k, start) if kind == "slab")
    report = command.report_of(inner, pfn)
    cache = report.owner.detail.get("cache_address")
    if cache is None:
        pytest.skip("the slab namer names no cache address")
    name_ptr = k.u64(cache + k.off("struct kmem_cache", "name"))
    t = fresh(sample)
    t.patch(name_ptr, EVIL + b"\0")
    _assert_clean_output(t, pfn, "EVIL")


# -- safety: no write path ------------------------------------------------------------------

#: calls that would change the target
WRITE_CALLS = {"write_memory", "writemem", "write_mem", "writeMem", "poke", "pokedata", "ptrace",
               "set_memory", "write_register", "writereg", "process_vm_writev", "memmove", "memset"}
#: the only debugger commands pagewho may run: they read
READ_ONLY_COMMANDS = {"info", "x", "p", "print", "ptype", "whatis", "sym", "rd", "struct", "help",
                      "output", "show", "kmem", "vtop", "sys", "list"}
EXECUTE_CALLS = {"execute", "exec_crash_command", "exec_gdb_command", "crash_command"}
#: gdb remote packets that only choose how the stub reads (QEMU: physical or
#: virtual addresses for the following memory reads)
READ_MODE_PACKETS = ("maint packet Qqemu.PhyMemMode:",)
#: QMP / HMP commands that change a QEMU guest
QEMU_MUTATORS = {"human-monitor-command", "system_reset", "system_powerdown", "cont", "quit",
                 "inject-nmi", "pmemsave", "memsave", "migrate", "device_add", "device_del"}


def _adapter_sources() -> List[Path]:
    files = sorted((REPO / "pagewho").glob("*.py")) + sorted((REPO / "pagewho" / "owners").glob("*.py"))
    files += [REPO / "gdb" / "pagewho.py"] + sorted((REPO / "crashext").glob("*.py"))
    return [f for f in files if f.exists()]


def _command_text(node: ast.AST) -> Optional[str]:
    """The constant start of a debugger command string, or None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        return _command_text(node.left)
    return None


def _command_word(node: ast.AST) -> Optional[str]:
    text = _command_text(node)
    if text is None:
        return None
    if text.startswith(READ_MODE_PACKETS):
        return "info"  # reads stay reads; nothing in the guest changes
    return text.split()[0] if text.split() else ""


def test_targets_have_no_write_path():
    from pagewho import target as target_mod

    for cls in (target_mod.Target, DrgnTarget):
        bad = [n for n in dir(cls) if re.search(r"write|poke|store|set_mem|ptrace", n, re.I)]
        assert bad == [], "%s has write-like methods %s" % (cls.__name__, bad)
    problems = []
    for path in _adapter_sources():
        tree = ast.parse(path.read_text(), str(path))
        where = lambda node, path=path: "%s:%d" % (path.relative_to(REPO), node.lineno)  # noqa: E731
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in ("ctypes", "cffi", "ptrace") for n in names):
                    problems.append("%s imports %s" % (where(node), names))
            if isinstance(node, ast.FunctionDef) and re.search(r"write_mem|poke|set_mem", node.name, re.I):
                problems.append("%s defines %s" % (where(node), node.name))
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                v = node.value
                if re.search(r"/dev/(k?mem|port)\b", v) or v in QEMU_MUTATORS or v.startswith("monitor "):
                    problems.append("%s has %r" % (where(node), v))
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in WRITE_CALLS:
                problems.append("%s calls %s" % (where(node), name))
            if name == "write" and isinstance(func, ast.Attribute):
                receiver = ast.unparse(func.value)
                if re.search(r"prog|inferior|mem|crash|target", receiver, re.I):
                    problems.append("%s calls %s.write" % (where(node), receiver))
            if name in EXECUTE_CALLS and node.args:
                word = _command_word(node.args[0])
                if word not in READ_ONLY_COMMANDS:
                    problems.append("%s runs debugger command %s" % (where(node), ast.unparse(node.args[0])))
            if name == "open" and len(node.args) >= 2:
                mode = node.args[1]
                if isinstance(mode, ast.Constant) and re.search(r"[wa+]", str(mode.value)):
                    target_arg = ast.unparse(node.args[0])
                    if re.search(r"mem|kcore|vmcore|proc", target_arg, re.I):
                        problems.append("%s opens %s for writing" % (where(node), target_arg))
    assert problems == [], "\n".join(problems)


def test_the_write_path_check_catches_writes():
    """The checker itself: a source with writes is caught."""
    src = ("import gdb\n"
           "gdb.selected_inferior().write_memory(0x1000, b'x')\n"
           "gdb.execute('set var x = 1')\n"
           "prog.write(1, b'x')\n"
           "open('/dev/mem', 'wb')\n")
    tree = ast.parse(src)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    names = [c.func.attr if isinstance(c.func, ast.Attribute) else c.func.id for c in calls]
    assert "write_memory" in names and WRITE_CALLS & set(names)
    word = _command_word(next(c for c in calls if getattr(c.func, "attr", "") == "execute").args[0])
    assert word == "set" and word not in READ_ONLY_COMMANDS
    assert any(isinstance(n, ast.Constant) and n.value == "/dev/mem" for n in ast.walk(tree))


def test_overlay_never_writes_the_real_target(sample):
    """The tests' own overlay is a view: the shared target keeps its bytes."""
    inner = open_sample(sample)
    k = kernel_of(inner)
    addr = k.pfn_to_page(good_pfn(sample))
    before = inner.read(addr, 64)
    t = OverlayTarget(inner)
    t.patch(addr, b"\xff" * 64)
    assert t.read(addr, 64) == b"\xff" * 64
    assert inner.read(addr, 64) == before


def test_no_traceback_printed_unless_asked():
    """Nothing in pagewho or its adapters prints a traceback, except under
    an explicit PAGEWHO_DEBUG switch."""
    problems = []
    for path in _adapter_sources():
        tree = ast.parse(path.read_text(), str(path))
        guarded = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "PAGEWHO_DEBUG" in ast.unparse(node.test):
                guarded.update(id(n) for n in ast.walk(node))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("print_exc", "print_exception", "format_exc", "print_tb") \
                    and id(node) not in guarded:
                problems.append("%s:%d %s" % (path.relative_to(REPO), node.lineno, ast.unparse(node)))
    assert problems == [], problems


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"] + sys.argv[1:]))
