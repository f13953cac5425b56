"""The sample-vmcore lab itself: dumps open, truth is complete and true."""

import functools
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "vmcores-sample"))
import lab  # noqa: E402
import lab_elf  # noqa: E402

drgn = pytest.importorskip("drgn")


@functools.lru_cache(maxsize=None)
def program(core: str, vmlinux: str):
    prog = drgn.Program()
    prog.set_core_dump(core)
    prog.load_debug_info([vmlinux])
    return prog


def release_of(prog) -> str:
    return prog["init_uts_ns"].name.release.string_().decode()


def records(sample, kind):
    return [r for r in sample.truth["records"] if r["kind"] == kind]


def test_dump_opens_in_drgn_and_release_matches_truth(sample):
    prog = program(str(sample.vmcore_elf), str(sample.vmlinux))
    assert release_of(prog) == sample.truth["release"] == sample.release


def test_kdump_copy_opens_in_drgn_and_release_matches_truth(sample):
    prog = program(str(sample.vmcore_kdump), str(sample.vmlinux))
    assert release_of(prog) == sample.truth["release"]


def test_every_planted_kind_is_present_or_its_absence_explained(sample):
    kinds = sample.truth["kinds"]
    for kind in lab.PLANTED_KINDS:
        assert kind in kinds, kind
        assert kinds[kind].startswith("present") or kind in sample.truth["missing"], (
            f"{kind}: {kinds[kind]}")


def test_anon_marker_is_in_the_planted_pfns_of_the_elf_dump(sample):
    prog = program(str(sample.vmcore_elf), str(sample.vmlinux))
    anon = records(sample, "anon")
    assert anon
    for r in anon:
        page = prog.read(r["pfn"] * 4096, 4096, True)
        assert page.startswith(r["marker"].encode() + b"\0"), (r["pfn"], page[:40])
        # the forked child maps the very same page
        assert r["child_pfn"] == r["pfn"]


def test_planted_file_pages_hold_their_file_contents(sample):
    prog = program(str(sample.vmcore_elf), str(sample.vmlinux))
    for r in records(sample, "pagecache") + records(sample, "file-mmap"):
        name = r["path"].rsplit("/", 1)[1]
        want = f"PAGEWHO-FILE {name} page {r['offset'] // 4096}".encode()
        assert prog.read(r["pfn"] * 4096, len(want), True) == want


def test_kpageflags_agree_with_the_planted_kinds(sample):
    flags = sample.kpageflags()
    count = sample.kpagecount()
    bit = lab.KPF
    want = {"anon": ["anon", "mmap"], "file-mmap": ["mmap", "lru"], "pagecache": ["lru"],
            "pagecache-dirty": ["dirty"], "shmem": ["swapbacked"], "thp": ["thp", "compound_head"],
            "hugetlb": ["huge", "compound_head"], "hugetlb-free": ["huge"], "ksm": ["ksm"],
            "swapcache": ["swapcache"]}
    for kind, names in want.items():
        for r in records(sample, kind):
            for n in names:
                assert flags[r["pfn"]] >> bit[n] & 1, (kind, r["pfn"], n, hex(flags[r["pfn"]]))
    for r in records(sample, "anon"):
        assert count[r["pfn"]] == 2  # parent and forked child
    for r in records(sample, "pagecache") + records(sample, "file-mmap"):
        assert not flags[r["pfn"]] >> bit["anon"] & 1


def test_slab_workload_grew_recognisable_caches(sample):
    grown = {s["cache"] for s in sample.truth["slab_caches"]}
    assert {"dentry", "filp"} <= grown or sample.truth["missing"].get("slab")


def test_kaslr_is_on_and_its_offset_recorded(sample):
    k = sample.truth["kaslr"]
    assert k["offset"] is not None and k["offset"] % 0x200000 == 0
    assert "nokaslr" not in sample.truth["proc"]["cmdline"]


def test_truth_arrays_cover_every_pfn(sample):
    flags, count = sample.kpageflags(), sample.kpagecount()
    assert len(flags) == len(count) == sample.truth["max_pfn"]
    assert len(flags) * 4096 >= 0.9 * (sample.truth["mem_mb"] << 20)


def test_filtered_dump_keeps_every_slab_page(sample):
    dump = sample.truth["dump"]
    cov = dump["coverage"][str(dump["kdump_level"])]
    assert cov["slab_pages_kept"] == cov["slab_pages"], dump.get("why")
    _, bitmap = lab_elf.kdump_dumped_pfns(sample.vmcore_kdump)
    flags = sample.kpageflags()
    slab = [p for p, f in enumerate(flags) if f >> lab.KPF["slab"] & 1]
    assert slab and all(lab_elf.bit(bitmap, p) for p in slab)


def test_cached_build_answers_fast():
    t = time.monotonic()
    r = subprocess.run([sys.executable, str(REPO / "vmcores-sample" / "build.py"), "bookworm"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert time.monotonic() - t < 5
    assert r.stdout.startswith("bookworm\t")


def test_elf_copy_for_makedumpfile_has_program_headers_at_64(sample_bookworm, tmp_path):
    out = tmp_path / "phdr64.elf"
    src = sample_bookworm.vmcore_elf
    # only the first MiB matters for the headers; a truncated copy keeps it quick
    head = tmp_path / "head.elf"
    with open(src, "rb") as f:
        head.write_bytes(f.read(1 << 20))
    lab_elf.phdrs_at_64(head, out)
    eh = lab_elf.EHDR.unpack(out.read_bytes()[:lab_elf.EHDR.size])
    old = lab_elf.EHDR.unpack(head.read_bytes()[:lab_elf.EHDR.size])
    assert eh[5] == 64 and eh[10] == old[10]
    a, b = out.read_bytes(), head.read_bytes()
    n = old[10] * lab_elf.PHDR_SIZE
    assert a[64:64 + n] == b[old[5]:old[5] + n]


def test_live_guest_is_stopped_at_ready_with_gdbstub_on_localhost(live_guest):
    g = live_guest("bookworm")
    assert g.host == "127.0.0.1"
    assert g.truth["release"] == g.release
    assert g.truth["mode"] == "live" and g.truth["records"]
    assert g.qmp.execute("query-status")["status"] in ("paused", "debug")
    with socket.create_connection((g.host, g.gdb_port), timeout=10):
        pass
    proc = g.proc
    g.close()
    assert proc.poll() is not None
    with pytest.raises(OSError):
        socket.create_connection((g.host, g.gdb_port), timeout=2).close()


def test_truth_json_is_plain_json(sample_bookworm):
    json.loads(sample_bookworm.truth_path.read_text())


def test_a_guest_that_never_gets_ready_is_retried_then_fails_loudly(
        sample_bookworm, tmp_path, monkeypatch):
    import lab_guest

    monkeypatch.setattr(lab_guest, "BOOT_TIMEOUT", 0.5)
    kdir = sample_bookworm.vmlinux.parent
    with pytest.raises(RuntimeError, match="never reached READY in 3 tries"):
        lab._boot(kdir, tmp_path, 1024, {}, logdir=tmp_path)
    assert not lab_guest._live  # every QEMU of every try was killed
    assert len(list(tmp_path.glob("serial-failed-*.log"))) == 3
