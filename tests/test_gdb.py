"""The gdb front end (gdb/pagewho.py) on the four sample kernels.

For each kernel the lab boots a live guest (KASLR on, stopped at READY, a
gdbstub on 127.0.0.1).  One gdb session connects and runs everything that
needs the live kernel; while gdb holds the guest stopped it also has QEMU
write a paging ELF dump (``monitor dump-guest-memory -p``) of that very
memory.  The dump is the bridge to the command line, which cannot read a
gdbstub:

    live gdb  ==  gdb on the dump  ==  CLI (drgn) on the dump     (same text)
    live gdb owner kinds  ==  the kinds the guest's workload planted (truth)
    GdbTarget  ==  DrgnTarget  on the dump, name by name (target level)

The guest is killed when the module's tests for it end, pass or fail.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(REPO / "vmcores-sample"))
import lab  # noqa: E402  (the sample lab; tests/conftest.py imports it too)

PLUGIN = REPO / "gdb" / "pagewho.py"
GDB = shutil.which("gdb")
GDB_TIMEOUT = 900  # one gdb session: loading a vmlinux's DWARF takes seconds, a dump more
CLI_TIMEOUT = 600
MARK = "@@pagewho-test@@"

# What the guest's workload planted (vmcores-sample/workload.c "kind") and
# the owners pagewho may name for it.  A "swapcache" page was swapped out
# and faulted back in: it is an anonymous page again (anon mapping), and the
# kernel drops it from the swap cache when it likes, so both answers are right.
TRUTH_KIND = {
    "pagecache": ("pagecache",),
    "pagecache-dirty": ("pagecache",),
    "file-mmap": ("pagecache",),
    "shmem": ("shmem",),
    "swapcache": ("swapcache", "anon"),
    "anon": ("anon",),
    "thp": ("anon",),
    "ksm": ("ksm",),
    "hugetlb": ("hugetlb",),
    "hugetlb-free": ("hugetlb",),
    "slab": ("slab",),
}

needs_gdb = pytest.mark.skipif(GDB is None, reason="gdb is not installed (scripts/setup)")


# ---------------------------------------------------------------- running gdb

def run_gdb(vmlinux, commands, core=None, timeout=GDB_TIMEOUT, notes=None):
    """Run ``gdb -batch`` with the plugin sourced and ``commands`` one by one;
    return each command's output (stdout and stderr, in order).

    gdb goes on after a failing -ex command, so one session checks that a
    command still works after an error.  The plugin's KASLR notes go to
    ``notes`` (a list) when given.
    """
    args = [GDB, "-batch", "-nx", "-iex", "set pagination off", "-iex", "set width 0",
            "-iex", "set confirm off", "-ex", f"source {PLUGIN}"]
    for c in commands:
        args += ["-ex", f"echo \\n{MARK}\\n", "-ex", c]
    args += ["-ex", f"echo \\n{MARK}\\n", str(vmlinux)]
    if core is not None:
        args.append(str(core))
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"gdb did not finish in {timeout} s: {commands}") from None
    text = out.decode("utf-8", "replace")
    parts = text.split(f"\n{MARK}\n")
    assert len(parts) == len(commands) + 2, f"gdb output not in {len(commands)} parts:\n{text[-3000:]}"
    assert "Traceback" not in text, f"a Python traceback reached gdb:\n{text[-3000:]}"
    if notes is not None:
        notes += re.findall(r"^pagewho: KASLR:.*$", text, re.MULTILINE)
    return [_drop_kaslr_note(p) for p in parts[1:-1]]


def timed(command, label, show=False):
    """A gdb command that runs ``command`` and prints "LABEL seconds" (or
    "LABEL failed: why") last, timed inside gdb so gdb's start-up is not
    counted; with ``show`` the command's own output comes first."""
    return python(f"import time as _t\n_s = _t.perf_counter()\ntry:\n"
                  f"    _o = gdb.execute({command!r}, to_string=True)\n"
                  f"    _d = _t.perf_counter() - _s\n"
                  f"    print(_o if {show!r} else '', end='')\n"
                  f"    print('{label} %.3f' % _d)\n"
                  f"except gdb.error as _e:\n    print('{label} failed:', _e)\n")


def split_timed(text, label):
    """(output, seconds) of a timed(..., show=True) section."""
    body, _, tail = text.rpartition(label + " ")
    return body, float(tail)


def python(code):
    """One gdb command line that runs the (multi-line) Python ``code``."""
    return f"python exec(compile({code!r}, 'pagewho-test', 'exec'))"


def ctrl_c_after(seconds):
    """A gdb command arming a SIGINT to gdb itself, as Ctrl-C would send."""
    return python(f"import os, signal, threading\n"
                  f"threading.Timer({seconds}, os.kill, (os.getpid(), signal.SIGINT)).start()\n")


def _drop_kaslr_note(text):
    """The plugin's once-per-target KASLR note (stderr) is not the answer."""
    return "".join(ln for ln in text.splitlines(True) if not ln.startswith("pagewho: KASLR:"))


def run_cli(vmcore, vmlinux, argv):
    r = subprocess.run([sys.executable, "-m", "pagewho.cli", "--vmcore", str(vmcore),
                        "--vmlinux", str(vmlinux), *argv],
                       cwd=REPO, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    return r.stdout


def planted(truth):
    """(truth kind, pfn) of every planted page whose kind pagewho names."""
    records = truth.get("records") if isinstance(truth, dict) else None
    if records is None:
        records = truth if isinstance(truth, list) else []
    out = []
    for r in records:
        if (isinstance(r, dict) and r.get("type", "record") == "record"
                and isinstance(r.get("pfn"), int) and r.get("kind") in TRUTH_KIND):
            out.append((r["kind"], r["pfn"]))
    return out


# ---------------------------------------------------------------- target level

# Names the core asks about, on every kernel; absent ones must be None in both.
TYPES = ["struct page", "struct folio", "struct slab", "struct zone", "struct pglist_data",
         "struct mem_section", "struct kmem_cache", "struct free_area", "struct list_head",
         "struct address_space", "struct anon_vma", "struct vm_area_struct", "struct mm_struct",
         "struct task_struct", "struct vmap_area", "struct uts_namespace", "struct inode",
         "struct per_cpu_pages", "struct pagewho_no_such_type"]
MEMBERS = [("struct page", m) for m in (
    "flags", "lru", "lru.next", "mapping", "index", "__folio_index", "private", "_mapcount",
    "_mapcount.counter", "page_type", "_refcount.counter", "compound_head", "compound_info",
    "compound_dtor", "compound_order", "memcg_data", "slab_cache", "pp_magic", "no_such_member")] + [
    ("struct folio", "_folio_order"), ("struct folio", "_flags_1"), ("struct folio", "flags"),
    ("struct slab", "slab_cache"), ("struct slab", "freelist"), ("struct slab", "inuse"),
    ("struct zone", "free_area"), ("struct zone", "free_area[3].free_list[1]"),
    ("struct zone", "name"), ("struct zone", "zone_start_pfn"), ("struct free_area", "nr_free"),
    ("struct mem_section", "section_mem_map"), ("struct kmem_cache", "name"),
    ("struct kmem_cache", "size"), ("struct kmem_cache", "node"), ("struct kmem_cache", "per_node"),
    ("struct uts_namespace", "name.release"), ("struct task_struct", "comm"),
    ("struct task_struct", "pid"), ("struct pglist_data", "node_zones[1].name"),
]
ENUMS = ["enum pageflags", "enum zone_type", "enum migratetype", "enum pagetype",
         "enum compound_dtor_id", "enum pagewho_no_such_enum"]
ENUMERATORS = ["PG_slab", "PG_lru", "PG_head", "PG_swapbacked", "NR_PAGEFLAGS", "MIGRATE_MOVABLE",
               "ZONE_NORMAL", "HUGETLB_PAGE_DTOR", "PGTY_buddy", "jiffies", "pagewho_no_such"]
SYMBOLS = ["linux_banner", "init_uts_ns", "mem_section", "_text", "_stext", "vmemmap_base",
           "page_offset_base", "node_data", "schedule", "__per_cpu_offset", "init_task",
           "slab_caches", "vmap_area_list", "swapper_pg_dir", "vmcoreinfo_data", "jiffies_64",
           "pagewho_no_such_symbol"]
FUNCTIONS = ["schedule", "do_exit", "__alloc_pages"]

# One function, run on a GdbTarget inside gdb and on a DrgnTarget here.
FACTS = """
def facts(t, names, TargetError):
    def rd(a, n):
        try:
            return t.read(a, n).hex()
        except TargetError:
            return "fault"

    def at(name, plus=0):
        a = t.symbol(name)
        return None if a is None else a + plus

    vmemmap = t.read_u64(t.symbol("vmemmap_base")) if t.symbol("vmemmap_base") else None
    page = None if vmemmap is None else vmemmap + 0x1000 * t.sizeof("struct page")
    return {
        "sizeof": {x: t.sizeof(x) for x in names["types"]},
        "offsetof": ["%s|%s=%s" % (a, m, t.offsetof(a, m)) for a, m in names["members"]],
        "member_size": ["%s|%s=%s" % (a, m, t.member_size(a, m)) for a, m in names["members"]],
        "enumerators": {x: t.enumerators(x) for x in names["enums"]},
        "enum_value": {x: t.enum_value(x) for x in names["enumerators"]},
        "symbol": {x: t.symbol(x) for x in names["symbols"]},
        "symbolize": {x: at(x) and t.symbolize(at(x, 5)) for x in names["functions"]},
        "release": t.release(),
        "vmcoreinfo": t.vmcoreinfo(),
        "read": [rd(at("linux_banner"), 64), rd(at("init_uts_ns"), 400),
                 page and rd(page, 8192), page and rd(page + 4000, 200), rd(16, 8)],
    }
"""


def gdb_facts_command(names):
    """A gdb command printing "@@TARGET <json>" of facts() on a GdbTarget
    (GdbTarget and TargetError are in gdb's __main__ once the plugin is sourced)."""
    return python(FACTS + f"""
import json, traceback
try:
    print("@@TARGET " + json.dumps(facts(GdbTarget(), json.loads({json.dumps(names)!r}), TargetError)))
except Exception:
    print("@@TARGET-ERROR " + traceback.format_exc().replace("\\n", " | "))
""")


def target_facts(t, names):
    from pagewho.target import TargetError

    space = {}
    exec(FACTS, space)
    return space["facts"](t, names, TargetError)


NAMES = {"types": TYPES, "members": MEMBERS, "enums": ENUMS, "enumerators": ENUMERATORS,
         "symbols": SYMBOLS, "functions": FUNCTIONS}


# ---------------------------------------------------------------- a flaky link

class CuttingProxy:
    """A TCP relay gdb -> 127.0.0.1:port that cuts both sides after
    ``limit`` bytes from the stub: a gdbstub that disconnects mid-run."""

    def __init__(self, port, limit):
        self.limit = limit
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.target = port
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.server.settimeout(GDB_TIMEOUT)
        try:
            client, _ = self.server.accept()
        except OSError:
            return
        stub = socket.create_connection(("127.0.0.1", self.target), timeout=GDB_TIMEOUT)
        sent = [0]

        def pump(src, dst, count):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
                    if count:
                        sent[0] += len(data)
                        if sent[0] > self.limit:
                            break
            except OSError:
                pass
            for s in (client, stub):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        up = threading.Thread(target=pump, args=(client, stub, False), daemon=True)
        up.start()
        pump(stub, client, True)
        up.join(timeout=10)
        client.close()
        stub.close()

    def close(self):
        self.server.close()
        self.thread.join(timeout=10)


# ---------------------------------------------------------------- per kernel

# Runs in gdb (plugin sourced): the report of one pfn read through PageWalk.
WALK = """
frame = gdb.selected_frame()
cr3, cr4 = int(frame.read_register("cr3")), int(frame.read_register("cr4"))
t = GdbTarget()
t.walk = PageWalk(t.inferior, cr3 & PageWalk.ADDR, 5 if cr4 & 1 << 12 else 4)  # kernel mode: its own PGD
out = []
command.run(t, ["{pfn}"], out.append)
print("".join(out), end="")
"""


def run_named(vmlinux, named, core=None):
    """run_gdb over (name, command) pairs; returns name -> output."""
    notes = []
    out = run_gdb(vmlinux, [c for _, c in named], core=core, notes=notes)
    return {**dict(zip([n for n, _ in named], out)), "kaslr-notes": notes}


@pytest.fixture(scope="module", params=lab.SUITES)
def kernel(request, tmp_path_factory):
    """Everything the tests compare, for one sample kernel.

    While the lab's guest is up: one live gdb session (answers, errors,
    Ctrl-C, then a paging dump of the memory it was reading), and one
    session through a link that breaks mid-run.  Then gdb and the CLI on
    the dump.  The guest is gone before the dump is read.
    """
    if GDB is None:
        pytest.skip("gdb is not installed")
    suite = request.param
    work = tmp_path_factory.mktemp(f"gdb-{suite}")
    dump = work / "paging.elf"
    with lab.live_guest(suite) as g:
        plants = planted(g.truth)
        assert plants, f"{suite}: the guest's truth has no planted pages"
        pfns = [f"{pfn:#x}" for _, pfn in plants]
        one = pfns[0]
        everything = f"--all 0-{g.truth['max_pfn'] - 1:#x}"
        remote = f"target remote {g.host}:{g.gdb_port}"
        t0 = time.monotonic()
        live = run_named(g.vmlinux, [
            ("connect", remote),
            ("json", "pagewho --json " + " ".join(pfns)),
            ("table", "pagewho " + " ".join(pfns)),
            ("report", f"pagewho {one}"),
            ("warm", timed(f"pagewho {pfns[-1]}", "WARM")),  # gdb and the core are warm now
            ("owner", f"print $pagewho_owner({one})"),
            ("bad-number", "pagewho zz"),
            ("beyond", "pagewho 0x7fffffffffff"),
            ("unmapped", "pagewho -a 0xdead000000000000"),
            ("not-a-page", "pagewho --page 0x1234"),
            ("owner-bad", "print $pagewho_owner(0x7fffffffffff)"),
            ("after-errors", f"pagewho {one}"),
            ("summary", timed("pagewho --summary", "SUMMARY", show=True)),
            ("arm", ctrl_c_after(1.0)),
            ("interrupted", "pagewho --summary"),
            ("after-interrupt", f"pagewho {one}"),
            # the PTI fallback (kernel page-table walk over physical reads),
            # forced on the kernel-mode vCPU's own tables: same answer
            ("walk", python(WALK.format(pfn=one))),
            ("phys-mode", "maint packet qqemu.PhyMemMode"),
            ("dump", f"monitor dump-guest-memory -p {dump}"),
            # the command the KASLR note suggests, with the offset the guest itself saw
            ("relocate", f"symbol-file -o {g.truth['kaslr']['offset']:#x} {g.vmlinux}"),
            ("gdb-print", "print init_uts_ns.name.release"),
            ("relocated", f"pagewho {one}"),
            ("detach", "detach"),
        ])
        live_s = time.monotonic() - t0
        proxy = CuttingProxy(g.gdb_port, 400_000)
        try:
            cut = run_named(g.vmlinux, [
                ("connect", f"target remote 127.0.0.1:{proxy.port}"),
                ("report", f"pagewho {one}"),
                ("cut", f"pagewho {everything}"),
                ("after-cut", f"pagewho {one}"),
                ("gdb-after-cut", "print 6 * 7"),
            ])
        finally:
            proxy.close()
        # another kernel's vmlinux, when the lab has fetched one
        others = sorted(p for p in Path(g.vmlinux).parent.parent.glob("*/vmlinux") if p != Path(g.vmlinux))
        wrong = None
        if others:
            wrong = (others[0].parent.name, run_named(others[0], [
                ("connect", remote), ("answer", f"pagewho {one}"), ("detach", "detach")])["answer"])
        vmlinux, truth = g.vmlinux, g.truth
    try:
        assert dump.exists(), f"{suite}: QEMU wrote no paging dump:\n{live['dump']}"
        core = run_named(vmlinux, [
            ("json", "pagewho --json " + " ".join(pfns)),
            ("table", "pagewho " + " ".join(pfns)),
            ("report", f"pagewho {one}"),
            ("target", gdb_facts_command(NAMES)),
            # the build-id check, on real memory: VMCOREINFO made to name another build
            ("build-id", python("t = GdbTarget()\n"
                                "t.vmcoreinfo = lambda: 'BUILD-ID=00112233445566778899\\n'\n"
                                "try:\n    t.slide()\n    print('BUILDID accepted')\n"
                                "except TargetError as e:\n    print('BUILDID', e)\n")),
        ], core=dump)
        cli = {"json": run_cli(dump, vmlinux, ["--json", *pfns]),
               "table": run_cli(dump, vmlinux, pfns),
               "report": run_cli(dump, vmlinux, [one]),
               "summary": run_cli(dump, vmlinux, ["--summary"])}
        yield {"suite": suite, "live": live, "live_s": live_s, "cut": cut, "wrong": wrong, "core": core,
               "cli": cli, "plants": plants, "pfns": pfns, "dump": dump, "vmlinux": vmlinux,
               "truth": truth}
    finally:
        dump.unlink(missing_ok=True)


def same_summary(text):
    """A --summary without its own run time, and with column padding
    squeezed: pagewho.text.columns() pads like tabulate only roughly when
    tabulate is missing (gdb's system Python), and the venv has it.
    Every word and number must still be equal."""
    lines = [ln for ln in text.splitlines() if not re.fullmatch(r"\d+ pages classified in [\d.]+ s", ln)]
    rules = [re.sub(r"-+", "-", ln) if set(ln) <= {"-", " "} else ln for ln in lines]
    return [re.sub(r"(\S) {2,}", r"\1  ", ln).rstrip() for ln in rules]


def one_line(text):
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


@needs_gdb
def test_live_kinds_match_truth(kernel):
    """Over the live gdbstub, every planted page is named with its planted kind."""
    doc = json.loads(kernel["live"]["json"])
    got = {p["pfn"]: p["owner"]["kind"] for p in doc["pages"]}
    wrong = [(kind, hex(pfn), got.get(pfn)) for kind, pfn in kernel["plants"]
             if got.get(pfn) not in TRUTH_KIND[kind]]
    assert not wrong, f"{kernel['suite']}: (planted, pfn, gdb said): {wrong}"


@needs_gdb
def test_live_equals_core_equals_cli(kernel):
    """Same memory, same text: live gdb, gdb on the dump, the CLI on the dump."""
    live, core, cli = kernel["live"], kernel["core"], kernel["cli"]
    docs = {name: json.loads(out["json"]) for name, out in (("live", live), ("core", core), ("cli", cli))}
    for name in ("core", "cli"):
        diff = [(a, b) for a, b in zip(docs["live"]["pages"], docs[name]["pages"]) if a != b]
        assert not diff, (f"live gdb and {name} differ on pfn {diff[0][0]['pfn']:#x}: "
                          f"{ {k: (v, diff[0][1].get(k)) for k, v in diff[0][0].items() if diff[0][1].get(k) != v} }")
        assert docs["live"] == docs[name]
    assert live["table"] == core["table"] == cli["table"]
    assert live["report"] == core["report"] == cli["report"]
    assert live["report"].strip(), "empty report"
    summary, seconds = split_timed(live["summary"], "SUMMARY")
    assert same_summary(summary) == same_summary(cli["summary"])
    print(f"{kernel['suite']}: whole-memory --summary over the gdbstub {seconds:.1f} s "
          f"({kernel['truth']['mem_mb']} MiB guest)")


@needs_gdb
def test_target_agrees_with_drgn(kernel):
    """GdbTarget and DrgnTarget give the same answer, name by name."""
    from pagewho.drgn_target import DrgnTarget

    text = kernel["core"]["target"]
    line = next((ln for ln in text.splitlines() if ln.startswith("@@TARGET ")), None)
    assert line, text
    got = json.loads(line[len("@@TARGET "):])
    drgn = DrgnTarget.open(str(kernel["dump"]), str(kernel["vmlinux"]))
    want = json.loads(json.dumps(target_facts(drgn, NAMES)))
    for key in want:
        assert got[key] == want[key], f"{kernel['suite']}: {key} differs"
    assert got["sizeof"]["struct page"] in (56, 64, 72, 80)
    assert got["read"][-1] == "fault"


@needs_gdb
def test_errors_are_one_line_and_gdb_goes_on(kernel):
    live = kernel["live"]
    for name in ("bad-number", "beyond", "unmapped", "not-a-page", "owner-bad"):
        assert one_line(live[name]).startswith("pagewho: "), name
    assert live["after-errors"] == live["report"], "a command after the errors answers as before"


@needs_gdb
def test_ctrl_c_stops_a_long_run(kernel):
    live = kernel["live"]
    assert one_line(live["interrupted"]) == "pagewho: interrupted"
    assert live["after-interrupt"] == live["report"]


@needs_gdb
def test_gdbstub_lost_mid_run(kernel):
    cut = kernel["cut"]
    assert cut["report"] == kernel["live"]["report"]
    assert one_line(cut["cut"]).startswith("pagewho: the gdbstub connection closed")
    assert one_line(cut["after-cut"]).startswith("pagewho: no kernel memory")
    assert "$1 = 42" in cut["gdb-after-cut"]


@needs_gdb
def test_wrong_vmlinux_is_refused(kernel):
    """Another kernel's vmlinux: one line naming it, no answer from garbage."""
    if kernel["wrong"] is None:
        pytest.skip("no other kernel's vmlinux in the lab cache")
    release, answer = kernel["wrong"]
    line = one_line(answer)
    assert line.startswith("pagewho: ") and "does not match" in line and release in line, line


@needs_gdb
def test_other_build_is_refused(kernel):
    """A kernel whose VMCOREINFO build-id is not the vmlinux's is refused
    even where the banner sits where the vmlinux puts it."""
    line = one_line(kernel["core"]["build-id"])
    release = kernel["truth"]["release"]
    assert line.startswith("BUILDID the vmlinux does not match the kernel: "), line
    assert line.count(f"Linux {release}") == 2 and "build-id 001122334455" in line, line


@needs_gdb
def test_kernel_page_walk_reads_the_same(kernel):
    """PageWalk (used when the vCPU is in user mode under PTI) answers as
    gdb's own reads do, and leaves QEMU's gdbstub reading virtual memory."""
    live = kernel["live"]
    assert live["walk"] == live["report"]
    assert 'received: "0"' in live["phys-mode"]


@needs_gdb
def test_kaslr_note_gives_the_guests_offset(kernel):
    """Once per session, one line with the exact symbol-file command; its
    offset is the one the guest itself saw (kallsyms _text - System.map),
    and after it gdb's own print works and pagewho answers the same."""
    live, offset = kernel["live"], kernel["truth"]["kaslr"]["offset"]
    assert offset, "the lab's guests run with KASLR"
    assert len(live["kaslr-notes"]) == 1, live["kaslr-notes"]
    note = live["kaslr-notes"][0]
    assert note.endswith(f"for gdb itself: symbol-file -o {offset:#x} {kernel['vmlinux']}"), note
    assert f'"{kernel["truth"]["release"]}"' in live["gdb-print"], live["gdb-print"]
    assert live["relocated"] == live["report"]


@needs_gdb
def test_convenience_function(kernel):
    kind = kernel["live"]["owner"].split("=", 1)[1].strip().strip('"')
    doc = json.loads(kernel["live"]["json"])
    assert kind == doc["pages"][0]["owner"]["kind"]


@needs_gdb
def test_single_pfn_under_a_second_warm(kernel):
    warm = float(kernel["live"]["warm"].split("WARM", 1)[1])
    print(f"{kernel['suite']}: warm single pfn over the gdbstub {warm:.3f} s; "
          f"whole live session {kernel['live_s']:.1f} s")
    assert warm < 1.0


# ---------------------------------------------------------------- no lab needed

def test_no_write_path():
    """gdb/pagewho.py cannot write to the inferior: no write API is named,
    and gdb.execute only runs read-only "info" commands and the switch of
    QEMU's gdbstub between virtual and physical reads."""
    source = PLUGIN.read_text()
    tree = ast.parse(source)
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    for forbidden in ("write_memory", "write_register", "set_register", "write_mem"):
        assert forbidden not in names, forbidden
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "attr", "") in ("execute", "parse_and_eval"):
            arg = call.args[0]
            text = arg.value if isinstance(arg, ast.Constant) else ast.unparse(arg)
            if call.func.attr == "execute":  # "info ...", or QEMU's read-mode switch
                assert text.lstrip("f'\"").startswith(("info ", "maint packet Qqemu.PhyMemMode:")), text
            else:
                assert "=" not in text and "(" in text, text  # a cast of &sym, nothing assigned
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "GdbTarget")
    methods = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
    assert not any("write" in m for m in methods), methods


@needs_gdb
def test_bare_vmlinux_says_what_to_do(sample_bookworm):
    """gdb with only a vmlinux (e.g. after failing to open a kdump-compressed
    dump) must not answer from the file's own bytes."""
    out = run_gdb(sample_bookworm.vmlinux, ["pagewho 0x1000", "print 1 + 1"])
    assert out[0].strip().startswith("pagewho: no kernel memory")
    assert "kdump-compressed" in out[0] and len(out[0].strip().splitlines()) == 1
    assert "$1 = 2" in out[1]


@needs_gdb
def test_sourced_from_another_script(tmp_path):
    """As an auto-loaded vmlinux-gdb.py does: gdb.execute("source ...") from
    a script elsewhere (gdb then leaves __file__ naming the outer script)."""
    outer = tmp_path / "vmlinux-gdb.py"
    outer.write_text(f"import gdb\ngdb.execute('source {PLUGIN}')\n")
    r = subprocess.run([GDB, "-batch", "-nx", "-ex", f"source {outer}", "-ex", "help pagewho",
                        "-ex", "print $_streq(\"a\", \"a\")"],
                       capture_output=True, text=True, timeout=120)
    assert "Who owns a page frame" in r.stdout, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr


@needs_gdb
def test_dumps_gdb_cannot_read_say_so(sample_bookworm):
    """The lab's own dumps: QEMU's physical-only ELF and a kdump-compressed
    file.  gdb cannot read kernel virtual memory from either; pagewho says
    which and what to use instead, in one line, and gdb goes on."""
    s = sample_bookworm
    elf = run_gdb(s.vmlinux, ["pagewho 0x1000", "print 6 * 7"], core=s.vmcore_elf)
    line = one_line(elf[0])
    assert line.startswith("pagewho: this core has physical addresses only"), line
    assert "dump-guest-memory -p" in line and "pagewho --vmcore" in line
    assert "$1 = 42" in elf[1]
    kdump = run_gdb(s.vmlinux, ["pagewho 0x1000", "print 6 * 7"], core=s.vmcore_kdump)
    line = one_line(kdump[0])
    assert line.startswith("pagewho: no kernel memory") and "kdump-compressed" in line, line
    assert "$1 = 42" in kdump[1]


PTI_INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox dmesg | /bin/busybox grep -i 'isolation'
echo PAGEWHO-PTI-READY
while true; do :; done
"""


@needs_gdb
def test_user_mode_under_pti(tmp_path):
    """A vCPU stopped in user mode on PTI's user page tables (TCG's Intel
    Skylake model is Meltdown-affected, so the kernel turns PTI on): gdb's own
    reads of kernel memory fail there; pagewho walks the kernel's tables.

    The lab's guests use QEMU's AMD default (no PTI), so this boots its own
    minimal guest: the lab's bookworm kernel, a busybox /init spinning in
    user mode."""
    for tool in ("qemu-system-x86_64", "cpio", "busybox"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/setup)")
    release, kdir = lab.kernel("bookworm")
    root = tmp_path / "root"
    for d in ("bin", "proc", "dev"):
        (root / d).mkdir(parents=True)
    shutil.copy(shutil.which("busybox"), root / "bin" / "busybox")
    (root / "init").write_text(PTI_INIT)
    (root / "init").chmod(0o755)
    files = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
    initrd = tmp_path / "initrd.cpio"
    initrd.write_bytes(subprocess.run(["cpio", "-o", "-H", "newc"], cwd=root, input=files,
                                      capture_output=True, check=True).stdout)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serial = tmp_path / "serial.log"
    qemu = subprocess.Popen(
        ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "Skylake-Client", "-m", "512", "-smp", "1",
         "-nodefaults", "-display", "none", "-no-reboot", "-kernel", str(kdir / "vmlinuz"),
         "-initrd", str(initrd), "-append", "console=ttyS0 panic=-1", "-serial", f"file:{serial}",
         "-gdb", f"tcp:127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while b"PAGEWHO-PTI-READY" not in (serial.read_bytes() if serial.exists() else b""):
            assert qemu.poll() is None and time.monotonic() < deadline, "PTI guest did not boot"
            time.sleep(0.5)
        assert b"isolation: enabled" in serial.read_bytes(), "the guest did not turn PTI on"
        for _ in range(5):  # stop it until the vCPU is caught in user mode
            out = run_named(kdir / "vmlinux", [
                ("connect", f"target remote 127.0.0.1:{port}"),
                ("cs", "print $cs & 3"),
                ("gdb-read", "x/gx &init_uts_ns"),
                ("walk", python("print('WALK', GdbTarget().walk is not None)")),
                ("summary", "pagewho --summary"),
                ("report", "pagewho 0x1000"),
                ("phys-mode", "maint packet qqemu.PhyMemMode"),
                ("detach", "detach")])
            if out["cs"].strip().endswith("= 3"):
                break
        else:
            pytest.skip("the vCPU was never stopped in user mode")
    finally:
        os.killpg(qemu.pid, signal.SIGKILL)
        qemu.wait(timeout=30)
    assert "Cannot access memory" in out["gdb-read"]  # what gdb alone gets here
    assert "WALK True" in out["walk"]
    assert out["summary"].startswith(f"pagewho summary of {release}: 131072 pages (512.0 MiB)"), out["summary"]
    assert out["report"].startswith("pfn 0x1000  phys 0x1000000"), out["report"]
    assert 'received: "0"' in out["phys-mode"]
