"""User-memory owners on the four sample dumps: anon (rmap), KSM, page cache,
shmem, swap cache and page tables, checked against what the guest's workload
recorded from /proc/<pid>/pagemap, /proc/kpageflags and /proc/<pid>/status
(vmcores-sample/README.md).  drgn's own helpers serve as a second opinion
here only; pagewho itself never uses them.
"""

from __future__ import annotations

import collections
from array import array
from typing import Dict, List

import pytest
from samples import open_sample

from pagewho.command import report_of
from pagewho.kernel import kernel_of
from pagewho.owner import identify
from pagewho.owners.pgtable import pgtable_owner, table_map
from pagewho.owners.tasks import tasks_of
from pagewho.report import owner_line, page_dict
from pagewho.text import to_json

KPF_PGTABLE = 26
KPF_DIRTY = 4


def records(sample, *kinds: str) -> List[dict]:
    out = [r for r in sample.truth["records"] if r["kind"] in kinds and r.get("pfn") is not None]
    return out


def need(sample, *kinds: str) -> List[dict]:
    """The truth's records of ``kinds``; skip (saying why) when the workload
    could not plant them on this kernel."""
    out = records(sample, *kinds)
    if not out:
        why = "; ".join("%s: %s" % (k, sample.truth["kinds"].get(k)) for k in kinds)
        pytest.skip("not planted on %s (%s)" % (sample.release, why))
    return out


def report(sample, pfn: int, kdump: bool = False):
    return report_of(open_sample(sample, kdump), pfn)


def mapper_set(rep) -> set:
    return {(m["pid"], m["comm"], m["vaddr"]) for m in rep.owner.detail["mappers"]}


def truth_mappers(rec) -> set:
    return {(m["pid"], m["comm"], m["vaddr"]) for m in rec["mappers"]}


# -- anon ---------------------------------------------------------------------------

def test_anon_page_names_both_processes_that_share_it(sample):
    recs = need(sample, "anon")
    for rec in recs:
        rep = report(sample, rec["pfn"])
        assert rep.owner.kind == "anon", (rec, owner_line(rep))
        assert len(rec["mappers"]) == 2  # the parent and its forked child
        assert mapper_set(rep) == truth_mappers(rec), (rec, rep.owner.detail)
        assert all(m["verified"] for m in rep.owner.detail["mappers"])
        assert rep.owner.detail["verified"] is True
        summary = rep.owner.detail["summary"]
        for m in rec["mappers"]:
            assert "pid %d (%s)" % (m["pid"], m["comm"]) in summary
            assert "%#x" % m["vaddr"] in summary


def test_mlocked_anon_page_says_so(sample):
    for rec in need(sample, "anon"):
        det = report(sample, rec["pfn"]).owner.detail
        assert det.get("mlocked") is True, det


def test_anon_mappers_agree_with_drgn_page_table_walk(sample):
    """Every (process, vaddr) pagewho names maps the pfn in drgn's own walk."""
    from drgn.helpers.linux.mm import follow_pfn
    from drgn.helpers.linux.pid import find_task

    prog = open_sample(sample).prog
    for rec in need(sample, "anon", "ksm", "file-mmap")[:40]:
        for m in report(sample, rec["pfn"]).owner.detail["mappers"]:
            task = find_task(prog, m["pid"])
            assert follow_pfn(task.mm, m["vaddr"]).value_() == rec["pfn"], (rec["kind"], m)


def test_thp_reports_order_9_and_head(sample):
    for rec in need(sample, "thp"):
        head = rec["pfn"]
        for sub in (0, 1, 257, 511):
            rep = report(sample, head + sub)
            det = rep.owner.detail
            assert rep.owner.kind == "anon", owner_line(rep)
            assert det["thp"] is True and det["order"] == rec["order"] == 9
            assert det["head_pfn"] == head
            assert det["subpage"] == sub
            assert mapper_set(rep) == {(m["pid"], m["comm"], m["vaddr"] + sub * 4096)
                                       for m in rec["mappers"]}
            assert all(m["verified"] for m in det["mappers"])
            assert "THP order 9, head pfn %#x" % head in det["summary"]


def test_ksm_page_names_merging_process(sample):
    for rec in need(sample, "ksm"):
        rep = report(sample, rec["pfn"])
        det = rep.owner.detail
        assert rep.owner.kind == "ksm", owner_line(rep)
        assert mapper_set(rep) == truth_mappers(rec)
        assert det["nr_mappers"] == len(rec["mappers"]) == det["rmap_items"]
        assert all(m["verified"] for m in det["mappers"])
        assert det["processes"] == [{"pid": rec["pid"], "comm": rec["comm"]}]
        assert "pid %d (%s)" % (rec["pid"], rec["comm"]) in det["summary"]


# -- swap cache ---------------------------------------------------------------------

def test_anon_page_in_swap_cache_names_process_and_swap_slot(sample):
    recs = need(sample, "swapcache")
    offsets = set()
    for rec in recs:
        rep = report(sample, rec["pfn"])
        det = rep.owner.detail
        assert rep.owner.kind == "anon", owner_line(rep)  # read back: mapped again
        assert mapper_set(rep) == truth_mappers(rec)
        sw = det["swap"]
        assert sw["device"] == "/dev/" + rec["swap_dev"]
        assert sw["dev"] == rec["swap_dev"]
        assert sw["type"] == 0 and "note" not in sw, sw
        offsets.add(sw["offset"])
        assert "swap /dev/%s slot %d" % (rec["swap_dev"], sw["offset"]) in det["summary"]
    # one slot per page, and none of them the slots still swapped out
    assert len(offsets) == len(recs)
    outs = [r for r in sample.truth["records"] if r["kind"] == "swapped-out"]
    assert not offsets & {r["swap_offset"] for r in outs}
    # MADV_PAGEOUT wrote the whole buffer to consecutive slots: the slots
    # pagewho reads from folio->swap and those the guest read from its
    # pagemap (the PTE's swap entry) lie on one line, page index + base
    base = min(r["vaddr"] for r in recs + outs)
    ours = {report(sample, r["pfn"]).owner.detail["swap"]["offset"] - (r["vaddr"] - base) // 4096 for r in recs}
    theirs = {r["swap_offset"] - (r["vaddr"] - base) // 4096 for r in outs}
    assert len(ours) == 1 and ours == theirs


# -- page cache and shmem -----------------------------------------------------------

def _check_file(rec, rep) -> None:
    det = rep.owner.detail
    assert det["path"] == rec["path"], (rec, det)
    assert det["mounted"] is True
    assert det["offset"] == rec["offset"]
    assert det["ino"] == rec["ino"]
    assert det["fs"] == rec["fs"]
    if "dev" in rec:
        assert det["dev"] == rec["dev"]
    assert "%s offset %#x" % (rec["path"], rec["offset"]) in det["summary"]
    assert truth_mappers(rec) <= mapper_set(rep)
    for m in det["mappers"]:
        if (m["pid"], m["comm"], m["vaddr"]) in truth_mappers(rec):
            assert m["verified"] is True


def test_page_cache_page_names_file_path_and_offset(sample):
    for rec in need(sample, "pagecache", "file-mmap"):
        rep = report(sample, rec["pfn"])
        assert rep.owner.kind == "pagecache", (rec, owner_line(rep))
        _check_file(rec, rep)
        assert rep.owner.detail["dirty"] is False


def test_unmapped_page_cache_page_has_no_mappers(sample):
    for rec in need(sample, "pagecache"):
        assert report(sample, rec["pfn"]).owner.detail["mappers"] == []


def test_written_page_cache_page_says_dirty_as_the_kernel_did(sample):
    """dirty.bin was written and never synced, but something may still
    write it back before the guest's snapshot (it happened once on 6.1):
    the kernel's own KPF_DIRTY is the oracle."""
    flags = _kpageflags(sample)
    for rec in need(sample, "pagecache-dirty"):
        rep = report(sample, rec["pfn"])
        assert rep.owner.kind == "pagecache"
        _check_file(rec, rep)
        kernel_dirty = bool(flags[rec["pfn"]] >> KPF_DIRTY & 1)
        assert rep.owner.detail["dirty"] is kernel_dirty, rec
        assert (", dirty" in rep.owner.detail["summary"]) is kernel_dirty


def test_shmem_page_is_named_shmem_with_its_path(sample):
    for rec in need(sample, "shmem"):
        rep = report(sample, rec["pfn"])
        assert rep.owner.kind == "shmem", owner_line(rep)
        assert rep.owner.detail["shmem"] is True
        _check_file(rec, rep)


def test_owner_names_survive_the_filtered_kdump(sample):
    """makedumpfile drops the file and anon pages themselves, not the kernel
    structures that name their owners -- except where it mistakes slab pages
    for something it filters (makedumpfile 1.7.2 on 6.10+ kernels loses a few
    percent of them, see truth["dump"]): then the answer is partial and a
    note says which memory was missing."""
    complete = partial = 0
    for kind in ("file-mmap", "anon", "shmem", "ksm"):
        for rec in records(sample, kind)[:4]:
            full = page_dict(report(sample, rec["pfn"]))
            filtered = page_dict(report(sample, rec["pfn"], kdump=True))
            missing = [n for n in filtered["notes"] if "is not in the dump" in n]
            if not missing:
                assert filtered["owner"] == full["owner"]
                complete += 1
                continue
            partial += 1
            assert filtered["owner"]["kind"] == full["owner"]["kind"]
            for key in ("ino", "offset", "fs", "dev", "anon_vma", "stable_node"):
                assert filtered["owner"].get(key) == full["owner"].get(key)
    assert complete >= partial


# -- page tables --------------------------------------------------------------------

def _kpageflags(sample) -> array:
    flags = array("Q")
    flags.frombytes((sample.dir / "kpageflags.bin").read_bytes())
    return flags


def _pgtable_pfns(sample) -> List[int]:
    return [pfn for pfn, f in enumerate(_kpageflags(sample)) if f >> KPF_PGTABLE & 1]


def test_page_table_page_names_its_process(sample):
    """Every page the guest called a page table (KPF_PGTABLE) belongs to a
    live process's mm, a task-less kernel mm, or the kernel's own tables."""
    pfns = _pgtable_pfns(sample)
    assert pfns
    k = kernel_of(open_sample(sample))
    live = set(tasks_of(k).by_mm)
    kinds: Dict[str, int] = collections.Counter()
    for pfn in pfns:
        rep = identify(k, pfn)
        det = rep.owner.detail
        assert rep.owner.kind == "pgtable", (pfn, owner_line(rep))
        assert det["kernel"] is not None, (pfn, det["summary"])
        if det["kernel"]:
            kinds["kernel"] += 1
            assert det["summary"].startswith("kernel page tables")
        elif det["processes"]:
            kinds["process"] += 1
            assert det["mm"] in live
            p = det["processes"][0]
            assert "pid %d (%s)" % (p["pid"], p["comm"]) in det["summary"]
        else:
            kinds["special"] += 1
            assert det.get("special_mm"), det
    assert kinds["process"] > 0 and kinds["kernel"] > 0, kinds


def test_page_tables_of_each_process_add_up_to_its_vmpte(sample):
    """The tables found under each mm (below the pgd) are exactly what the
    kernel counted in mm_pgtables_bytes (VmPTE in /proc/<pid>/status),
    deposited THP tables included."""
    k = kernel_of(open_sample(sample))
    tm = table_map(k)
    per_mm: Dict[int, int] = collections.Counter()
    for owners in tm.owners.values():
        for mm, level, _, _, _ in owners:
            if level < tm.levels:
                per_mm[mm] += 1
    compared = 0
    for task in sample.truth["tasks"]:
        if task["vm_pte_kb"] < 0:
            continue  # a kernel thread
        procs = [mm for mm, ps in tasks_of(k).by_mm.items() if any(p.tgid == task["pid"] for p in ps)]
        assert len(procs) == 1, task
        assert per_mm[procs[0]] * 4 == task["vm_pte_kb"], task
        compared += 1
    assert compared >= 8


def test_thp_has_a_deposited_pte_table(sample):
    for rec in need(sample, "thp"):
        k = kernel_of(open_sample(sample))
        mm = [mm for mm, ps in tasks_of(k).by_mm.items() if any(p.tgid == rec["pid"] for p in ps)][0]
        deposited = [pfn for pfn, owners in table_map(k).owners.items()
                     for o in owners if o[0] == mm and o[4].startswith("deposited")]
        assert len(deposited) == 1
        info = pgtable_owner(k, deposited[0])
        assert info["level"] == "pte" and info["vaddr_start"] <= rec["vaddr"] <= info["vaddr_end"]


def test_kernel_top_level_table_is_the_kernels(sample):
    k = kernel_of(open_sample(sample))
    top = k.sym_opt("init_top_pgt") or k.sym("swapper_pg_dir")
    info = pgtable_owner(k, k.virt_to_pfn(top))
    assert info["kernel"] is True and info["level"] == "pgd"


# -- output ---------------------------------------------------------------------------

def test_user_owner_json_is_plain_data(sample):
    for kind in ("anon", "ksm", "shmem", "file-mmap", "swapcache", "thp"):
        for rec in records(sample, kind)[:1]:
            text = to_json(page_dict(report(sample, rec["pfn"])))
            assert '"summary"' in text and "\\u001b" not in text


def test_tasks_index_has_every_process_the_guest_listed(sample):
    k = kernel_of(open_sample(sample))
    ours = {(t.tgid, t.comm) for t in tasks_of(k).tasks if t.pid == t.tgid}
    # /proc/<pid>/status shows a user process's comm as is (a kworker's
    # gets its workqueue appended, so only processes with an mm are compared)
    theirs = {(t["pid"], t["comm"]) for t in sample.truth["tasks"] if t["vm_pte_kb"] >= 0}
    assert len(theirs) >= 8
    missing = {(p, c) for p, c in theirs if (p, c) not in ours}
    assert not missing


# -- corrupt data: every walk ends ----------------------------------------------------

class _FakeKernel:
    """Just enough of a Kernel for the container walkers: u64 reads from a
    dict (absent addresses fault) and fixed member offsets."""

    OFFSETS = {("struct rb_node", "__rb_parent_color"): 0,
               ("struct rb_node", "rb_right"): 8, ("struct rb_node", "rb_left"): 16,
               ("struct dentry", "d_parent"): 24, ("struct dentry", "d_name"): 32,
               ("struct qstr", "name"): 8}

    def __init__(self, words: Dict[int, int]) -> None:
        self.words = words
        self.memo: Dict[str, object] = {}

    def u64(self, addr: int) -> int:
        from pagewho.target import FaultError

        if addr not in self.words:
            raise FaultError(addr, 8)
        return self.words[addr]

    def off(self, type_name: str, member: str) -> int:
        return self.OFFSETS[(type_name, member)]

    def cstring(self, addr: int, limit: int = 256) -> bytes:
        return b"x"


BASE = 0xFFFF888000001000


def test_rb_tree_walk_ends_on_a_cycle():
    from pagewho.owners.tasks import rb_nodes

    a, b, c, root = BASE, BASE + 0x100, BASE + 0x200, BASE + 0x300
    # a -> (b, c); c's right child points back at a (black nodes: color bit 1)
    words = {root: a, a: 1, a + 8: c, a + 16: b, b: a | 1, b + 8: 0, b + 16: 0,
             c: a | 1, c + 8: a, c + 16: 0}
    assert sorted(rb_nodes(_FakeKernel(words), root)) == [a, b, c]
    # a child whose parent pointer names another node ends its branch
    words[c + 8] = BASE + 0x400
    words.update({BASE + 0x400: BASE + 0x500, BASE + 0x408: 0, BASE + 0x410: 0})
    assert sorted(rb_nodes(_FakeKernel(words), root)) == [a, b, c]


def test_list_and_hlist_walks_end_on_a_loop():
    from pagewho.owners.tasks import hlist_nodes, list_nodes

    head, n1, n2 = BASE, BASE + 0x100, BASE + 0x200
    # n2 loops back to n1, never to the head
    k = _FakeKernel({head: n1, n1: n2, n2: n1})
    assert list(list_nodes(k, head)) == [n1, n2]
    # hlist nodes carry pprev (the pointer that leads to them) at +8
    k = _FakeKernel({head: n1, n1: n2, n1 + 8: head, n2: n1, n2 + 8: n1})
    assert list(hlist_nodes(k, head)) == [n1, n2]
    # a node whose pprev does not point back ends the walk (not an hlist)
    k = _FakeKernel({head: n1, n1: n2, n1 + 8: head, n2: n1, n2 + 8: BASE + 0x900})
    assert list(hlist_nodes(k, head)) == [n1]


def test_dentry_walk_ends_on_a_parent_loop():
    from pagewho.owners.file import MAX_DEPTH, _walk_to

    d1, d2 = BASE, BASE + 0x100
    words = {d1 + 24: d2, d2 + 24: d1, d1 + 32 + 8: BASE + 0x800, d2 + 32 + 8: BASE + 0x800}
    names: List[bytes] = []
    assert _walk_to(_FakeKernel(words), d1, 0, names) is False
    assert len(names) == MAX_DEPTH


def test_no_page_table_page_has_two_owners(sample):
    """Each table page is reached once (no hugetlb PMD sharing is planted):
    a second owner would mean a table mistaken for another, such as the page
    after a pgd taken for its PTI user copy while PTI is off."""
    tm = table_map(kernel_of(open_sample(sample)))
    shared = {pfn: owners for pfn, owners in tm.owners.items() if len(owners) > 1}
    assert not shared


def test_hugetlb_mappers_helper_names_the_mapping_process(sample):
    """anon.hugetlb_mappers (offered to the hugetlb namer) finds the process
    and address of each planted hugetlb page, whichever unit its index has."""
    from pagewho.owners.anon import hugetlb_mappers
    from pagewho.page import decoder_of

    k = kernel_of(open_sample(sample))
    d = decoder_of(k)
    for rec in need(sample, "hugetlb"):
        head = d.read_page(rec["pfn"])
        found = hugetlb_mappers(k, head, head)
        assert {(m["pid"], m["comm"], m["vaddr"]) for m in found} == truth_mappers(rec)
        assert all(m["verified"] for m in found)


def test_swapped_out_pages_still_in_swap_cache_match_their_swap_entries(sample):
    """Pages MADV_PAGEOUT wrote out may linger in the swap cache while the
    process's PTE holds the swap entry: pagewho names the process with a
    "swapped" PTE whose swap entry matches the page's, and the slot it reads
    from folio->swap is the one the guest's pagemap showed for that
    address."""
    from pagewho.owners.swap import in_swapcache
    from pagewho.scan import scan

    outs = {r["vaddr"]: r for r in sample.truth["records"] if r["kind"] == "swapped-out"}
    if not outs:
        pytest.skip("nothing swapped out on %s" % sample.release)
    k = kernel_of(open_sample(sample))
    matched = 0
    for page, head, kind in scan(k):
        if kind != "anon" or not in_swapcache(k, head):
            continue
        det = identify(k, page.pfn).owner.detail
        for m in det["mappers"]:
            rec = outs.get(m["vaddr"])
            if rec is not None and m["pid"] == rec["pid"]:
                assert m["pte"] == "swapped" and m["verified"]
                assert det["swap"]["type"] == rec["swap_type"]
                assert det["swap"]["offset"] == rec["swap_offset"]
                assert "(swap entry)" in det["summary"]
                matched += 1
    if not matched:
        pytest.skip("no swapped-out page lingered in the swap cache on %s" % sample.release)


def test_every_user_page_has_as_many_verified_mappers_as_its_mapcount(sample):
    """Over the whole dump, not just the planted pages: for every order-0
    anon, KSM, page cache and shmem page, the mappings pagewho finds by
    reverse map and confirms in the page tables are exactly as many as the
    kernel's own count of them (_mapcount + 1)."""
    from pagewho.scan import scan

    k = kernel_of(open_sample(sample))
    checked: Dict[str, int] = collections.Counter()
    wrong = []
    for page, _head, kind in scan(k):
        if kind not in ("anon", "ksm", "pagecache", "shmem") or page.is_head or page.is_tail:
            continue
        det = identify(k, page.pfn).owner.detail
        verified = sum(1 for m in det["mappers"] if m["verified"] and m["pte"] == "mapped")
        checked[kind] += 1
        if verified != page.mapcount or det["nr_mappers"] > len(det["mappers"]):
            wrong.append((page.pfn, kind, page.mapcount, verified))
    assert not wrong, wrong[:20]
    assert checked["anon"] > 1000 and checked["shmem"] > 100 and checked["pagecache"] > 50, checked


def _maps(sample) -> Dict[int, List[tuple]]:
    """pid -> [(start, end, name or None)] from the guest's /proc/<pid>/maps."""
    out: Dict[int, List[tuple]] = {}
    for pid, text in sample.truth["maps"].items():
        rows = []
        for line in text.splitlines():
            parts = line.split(None, 5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            rows.append((lo, hi, parts[5].strip() if len(parts) > 5 else None))
        out[int(pid)] = rows
    return out


def test_anon_page_region_agrees_with_proc_maps(sample):
    """Each anon mapper's region ([heap], [stack], the file of a private
    mapping, or none) is what the guest's /proc/<pid>/maps shows there."""
    from pagewho.scan import scan

    maps = _maps(sample)
    k = kernel_of(open_sample(sample))
    seen: Dict[object, int] = collections.Counter()
    wrong = []
    for page, _head, kind in scan(k):
        if kind != "anon":
            continue
        for m in identify(k, page.pfn).owner.detail["mappers"]:
            rows = maps.get(m["pid"])
            if rows is None:
                continue  # a process that came after the guest's snapshot
            name = next((n for lo, hi, n in rows if lo <= m["vaddr"] < hi), "?")
            seen[m["region"]] += 1
            if m["region"] != name:
                wrong.append((page.pfn, m["pid"], hex(m["vaddr"]), m["region"], name))
    assert not wrong, wrong[:20]
    assert seen["[heap]"] and seen["[stack]"] and seen[None], seen


def test_tasks_index_matches_drgn_for_each_task(sample):
    """The task walk (leaders and their threads) finds the same tasks,
    pids, comms and mms as drgn's for_each_task."""
    from drgn.helpers.linux.pid import for_each_task

    t = open_sample(sample)
    ours = {(x.pid, x.tgid, x.comm, x.mm) for x in tasks_of(kernel_of(t)).tasks}
    theirs = {(task.pid.value_(), task.tgid.value_(), task.comm.string_().decode(), task.mm.value_())
              for task in for_each_task(t.prog)}
    # drgn's walk starts after init_task (the idle task, pid 0); ours includes it
    assert ours - theirs == {x for x in ours if x[0] == 0}
    assert theirs <= ours


def test_each_process_pgd_page_records_its_mm(sample):
    """x86 records the owner of a pgd page in page->pt_mm (pgd_set_mm):
    every user pgd the walk found agrees with it."""
    from pagewho.owners.pgtable import _pt_mm
    from pagewho.page import decoder_of

    k = kernel_of(open_sample(sample))
    tm = table_map(k)
    d = decoder_of(k)
    pgds = [(pfn, owners[0][0]) for pfn, owners in tm.owners.items()
            if owners[0][1] == tm.levels and owners[0][0] and not owners[0][4]]
    assert len(pgds) >= 8
    for pfn, mm in pgds:
        assert _pt_mm(k, d.read_page(pfn)) == mm


def test_swap_ptes_decode_to_the_slots_the_guest_saw(sample):
    """The x86-64 swap PTE decoding (type on top, offset inverted) gives,
    for every page still swapped out, the (type, offset) the guest read for
    it from /proc/PID/pagemap."""
    from pagewho.owners.tasks import SWAPPED, pte_swap_entry, user_lookup

    outs = [r for r in sample.truth["records"] if r["kind"] == "swapped-out"]
    if not outs:
        pytest.skip("nothing swapped out on %s" % sample.release)
    k = kernel_of(open_sample(sample))
    mm = [mm for mm, ps in tasks_of(k).by_mm.items() if any(p.tgid == outs[0]["pid"] for p in ps)][0]
    for rec in outs:
        state, raw = user_lookup(k, mm, rec["vaddr"])
        assert state == SWAPPED
        assert pte_swap_entry(raw) == (rec["swap_type"], rec["swap_offset"])


def test_swap_pte_index_finds_every_swapped_out_page(sample):
    """The index of swap entries in every process's page tables (used for
    swap-cache pages no anon_vma names) has every page the guest saw
    swapped out, at its process and address."""
    from pagewho.owners.swap import swap_pte_index

    outs = [r for r in sample.truth["records"] if r["kind"] == "swapped-out"]
    if not outs:
        pytest.skip("nothing swapped out on %s" % sample.release)
    k = kernel_of(open_sample(sample))
    index = swap_pte_index(k)
    for rec in outs:
        got = [(p.tgid, vaddr) for mm, vaddr in index[(rec["swap_type"], rec["swap_offset"])]
               for p in tasks_of(k).processes(mm)]
        assert got == [(rec["pid"], rec["vaddr"])]


def test_swap_cache_namer_names_the_process_holding_the_swap_entry(sample):
    """A swap-cache page is named by the process whose PTE holds its swap
    entry (run on the planted pages that are both in the swap cache and
    swapped out of their process)."""
    from pagewho.owner import Owner
    from pagewho.owners.swap import in_swapcache, name_swapcache
    from pagewho.page import decoder_of
    from pagewho.scan import scan

    outs = {(r["swap_type"], r["swap_offset"]): r for r in sample.truth["records"] if r["kind"] == "swapped-out"}
    k = kernel_of(open_sample(sample))
    d = decoder_of(k)
    named = 0
    for page, head, kind in scan(k):
        if kind != "anon" or not in_swapcache(k, head):
            continue
        owner = Owner("swapcache")
        name_swapcache(k, page, head, owner)
        rec = outs.get((owner.detail["swap"]["type"], owner.detail["swap"]["offset"]))
        if rec is None:
            continue
        assert [(m["pid"], m["vaddr"]) for m in owner.detail["mappers"]] == [(rec["pid"], rec["vaddr"])]
        assert "swapped out of pid %d (%s)" % (rec["pid"], rec["comm"]) in owner.detail["summary"]
        named += 1
        assert d.test(head.flags, "PG_swapcache")
    if not named:
        pytest.skip("no swapped-out page lingered in the swap cache on %s" % sample.release)


def test_unmarked_page_tables_can_be_named_by_the_walk(sample):
    """pgd pages (and early kernel tables) carry no PageTable mark before
    ~v6.14; name_table_page(), offered to the "unknown" namer, names them
    from the walk: the process for a pgd, the kernel for init_top_pgt's
    tables."""
    from pagewho.owner import Owner
    from pagewho.owners.pgtable import name_table_page
    from pagewho.page import decoder_of

    k = kernel_of(open_sample(sample))
    tm = table_map(k)
    d = decoder_of(k)
    named = collections.Counter()
    for pfn in tm.owners:
        page = d.read_page(pfn)
        if page.page_type is not None or page.mapping or page.is_tail:
            continue
        owner = Owner("unknown")
        assert name_table_page(k, page, page, owner)
        assert owner.kind == "pgtable" and owner.detail["marked"] is False
        named["kernel" if owner.detail["kernel"] else "process"] += 1
        if not owner.detail["kernel"] and owner.detail["processes"]:
            p = owner.detail["processes"][0]
            assert "pid %d (%s)" % (p["pid"], p["comm"]) in owner.detail["summary"]
    if k.version < (6, 14, 0):
        assert named["process"] >= 8  # every process's pgd
