"""pagewho at the crash prompt, through the stand-in PyKdump (tests/pykdump).

What is proven here, on each sample kernel:

- PykdumpTarget (only documented PyKdump calls) and DrgnTarget agree on
  sizes, offsets, enumerators, symbols, memory, VMCOREINFO and release;
- ``pagewho ARGS`` typed at the (stand-in) crash prompt prints exactly what
  the command line prints for the same pfns;
- the adapter touches nothing outside the documented API, never writes,
  flushes its output, survives bad input and failing reads with one line
  and no traceback, and its per-dump cache never serves another dump.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from typing import List

import pytest
from crash_common import (
    CRASHEXT,
    PROGRAM,
    REPO,
    STANDIN,
    drgn_target,
    planted_pfns,
    spread_pfns,
    standin_session,
    uniq,
    vmcore_of,
)

sys.path.insert(0, STANDIN)
import crash  # noqa: E402  (the stand-in's)
import standin  # noqa: E402

from pagewho import command  # noqa: E402
from pagewho.kernel import kernel_of  # noqa: E402
from pagewho.target import FaultError  # noqa: E402

# The documented PyKdump surface (shared/PYKDUMP.md) the adapter may use.
DOCUMENTED = {
    "pykdump.API.readmem", "pykdump.API.sym2addr", "pykdump.API.addr2sym",
    "pykdump.API.struct_size", "pykdump.API.member_offset", "pykdump.API.member_size",
    "pykdump.API.enumerator_value", "pykdump.API.EnumInfo", "pykdump.API.sys_info",
    "sys_info.DUMPFILE", "sys_info.RELEASE", "sys_info.kernel",
    "crash.error", "crash.register_epython_prog",
}


def _adapter():
    """crashext/pagewho_pykdump.py as a module (the one the program imports)."""
    standin.install_path()
    if CRASHEXT not in sys.path:
        sys.path.append(CRASHEXT)  # last: crashext/pagewho.py must not shadow the package
    import pagewho_pykdump

    return pagewho_pykdump


# -- fixtures ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def dump(sample):
    """(lab sample, the vmcore file both the stand-in and the CLI read)."""
    return sample, vmcore_of(sample)


@pytest.fixture(scope="module")
def cli_target(dump):
    s, vmcore = dump
    return drgn_target(s, vmcore)


@pytest.fixture
def crash_session(dump, monkeypatch, tmp_path):
    """A stand-in crash session on the dump with pagewho registered the
    documented way (PYKDUMPPATH + epython register.py), run from a scratch
    directory."""
    s, vmcore = dump
    standin_session(standin, s, vmcore, monkeypatch, tmp_path)
    yield s
    assert standin.STATE.forbidden == [], "adapter used undocumented PyKdump names"
    assert standin.STATE.tracebacks == [], standin.STATE.tracebacks[0][-2000:]
    assert standin.STATE.lost == [], "output not flushed: %r" % standin.STATE.lost


def cli(target, argv: List[str]) -> str:
    out: List[str] = []
    command.run(target, argv, out.append)
    return "".join(out)


def pfns_for(s, target) -> List[int]:
    k = kernel_of(target)
    return uniq(planted_pfns(s, 2) + spread_pfns(k.max_pfn, 16))


# -- Target level: PykdumpTarget == DrgnTarget ---------------------------------------

TYPES = [
    "struct page", "struct folio", "struct slab", "struct mem_section", "struct zone",
    "struct pglist_data", "struct free_area", "struct kmem_cache", "struct list_head",
    "struct address_space", "struct inode", "struct anon_vma", "struct mm_struct",
    "struct task_struct", "struct vm_struct", "struct vmap_area", "struct uts_namespace",
    "struct per_cpu_pages", "atomic_t", "unsigned long", "int", "enum pageflags",
    "struct pagewho_no_such_struct",
]

MEMBERS = [
    ("struct page", "flags"), ("struct page", "compound_head"), ("struct page", "compound_info"),
    ("struct page", "_mapcount"), ("struct page", "_mapcount.counter"),
    ("struct page", "_refcount"), ("struct page", "_refcount.counter"), ("struct page", "mapping"),
    ("struct page", "index"), ("struct page", "__folio_index"), ("struct page", "private"),
    ("struct page", "lru"), ("struct page", "lru.next"), ("struct page", "buddy_list"),
    ("struct page", "page_type"), ("struct page", "compound_dtor"), ("struct page", "compound_order"),
    ("struct page", "slab_cache"), ("struct page", "memcg_data"), ("struct page", "pp_magic"),
    ("struct folio", "_folio_order"), ("struct folio", "_flags_1"), ("struct folio", "flags"),
    ("struct slab", "slab_cache"), ("struct slab", "inuse"),
    ("struct mem_section", "section_mem_map"), ("struct zone", "free_area"), ("struct zone", "name"),
    ("struct zone", "zone_start_pfn"), ("struct free_area", "free_list"),
    ("struct kmem_cache", "name"), ("struct kmem_cache", "size"), ("struct kmem_cache", "list"),
    ("struct kmem_cache", "node"), ("struct kmem_cache", "per_node"),
    ("struct uts_namespace", "name"), ("struct uts_namespace", "name.release"),
    ("struct task_struct", "comm"), ("struct task_struct", "pid"), ("struct task_struct", "mm"),
    ("struct vmap_area", "va_start"), ("struct vm_struct", "caller"),
    ("struct page", "pagewho_no_such_member"), ("struct pagewho_no_such_struct", "x"),
]

ENUMS = ["enum pageflags", "enum zone_type", "enum migratetype", "enum pagetype",
         "enum compound_dtor_id", "enum pagewho_no_such_enum"]

ENUMERATORS = ["PG_slab", "PG_lru", "PG_head", "PG_buddy", "__NR_PAGEFLAGS", "MIGRATE_MOVABLE",
               "PGTY_slab", "PGTY_buddy", "HUGETLB_PAGE_DTOR", "ZONE_NORMAL",
               "PAGEWHO_NO_SUCH_ENUMERATOR"]

SYMBOLS = ["mem_section", "vmemmap_base", "page_offset_base", "vmalloc_base", "init_uts_ns",
           "linux_banner", "max_pfn", "vmcoreinfo_data", "vmcoreinfo_size", "slab_caches",
           "init_task", "node_data", "contig_page_data", "_stext", "_end",
           "pagewho_no_such_symbol"]


@pytest.fixture(scope="module")
def targets(dump, cli_target):
    s, vmcore = dump
    if standin.STATE.vmcore != os.path.abspath(vmcore):
        standin.open_dump(vmcore, str(s.vmlinux))
    return _adapter().PykdumpTarget(vmcore), cli_target


def test_types_and_members_agree(targets):
    pk, dr = targets
    for t in TYPES:
        assert pk.sizeof(t) == dr.sizeof(t), t
    for t, m in MEMBERS:
        assert pk.offsetof(t, m) == dr.offsetof(t, m), (t, m)
        if "." not in m:  # PyKdump's member_size takes one member name
            assert pk.member_size(t, m) == dr.member_size(t, m), (t, m)
        else:
            assert pk.member_size(t, m) is None


def test_enums_agree(targets):
    pk, dr = targets
    for e in ENUMS:
        assert pk.enumerators(e) == dr.enumerators(e), e
    for name in ENUMERATORS:
        assert pk.enum_value(name) == dr.enum_value(name), name


def test_symbols_release_vmcoreinfo_agree(targets):
    pk, dr = targets
    for name in SYMBOLS:
        assert pk.symbol(name) == dr.symbol(name), name
    assert pk.release() == dr.release()
    assert standin.STATE.release == dr.release()
    mine = dict(ln.split("=", 1) for ln in (pk.vmcoreinfo() or "").splitlines() if "=" in ln)
    theirs = dict(ln.split("=", 1) for ln in (dr.vmcoreinfo() or "").splitlines() if "=" in ln)
    assert mine, "no VMCOREINFO through vmcoreinfo_data"
    # the note in the dump and the kernel's buffer agree on every key the core
    # uses (CRASHTIME may exist in only one of them)
    for key in set(mine) & set(theirs):
        assert mine[key] == theirs[key], key
    for key in theirs:
        if key.startswith(("NUMBER(", "SYMBOL(", "OFFSET(", "SIZE(", "PAGESIZE", "OSRELEASE")):
            assert mine.get(key) == theirs[key], key
    for name in ("linux_banner", "init_uts_ns", "slab_caches"):
        a = dr.symbol(name)
        if a is not None:
            assert pk.symbolize(a) == dr.symbolize(a), name
            assert pk.symbolize(a + 8) == dr.symbolize(a + 8), name


def test_memory_reads_agree(targets):
    pk, dr = targets
    k = kernel_of(dr)
    addrs = [dr.symbol("linux_banner"), dr.symbol("init_uts_ns"), dr.symbol("mem_section")]
    for pfn in spread_pfns(k.max_pfn, 8):
        addrs.append(k.vmemmap + pfn * k.struct_page_size)
    for a in addrs:
        if a is None:
            continue
        try:
            want = dr.read(a, 256)
        except FaultError:
            with pytest.raises(FaultError):
                pk.read(a, 256)
            continue
        assert pk.read(a, 256) == want, hex(a)
    # unreadable: address 0 (PyKdump raises IndexError), a hole in the
    # address space, past the end of memory
    for a in (0, 0x10, 0xFFFF800000000000, 0xFFFFFFFFFFFFF000):
        with pytest.raises(FaultError):
            pk.read(a, 8)
    assert pk.read(k.vmemmap, 0) == b""


def test_no_write_path_in_adapter():
    mod = _adapter()
    writers = [n for n in dir(mod.PykdumpTarget) if "write" in n.lower() or n.lower().startswith("wr")]
    assert writers == []
    tree = ast.parse(open(mod.__file__).read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "pykdump.API":
            imported |= {a.name for a in node.names}
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "crash":
            imported.add("crash." + node.attr)
    assert {"pykdump.API." + n if "." not in n else n for n in imported} <= DOCUMENTED
    assert not any("write" in n.lower() or n == "exec_crash_command" for n in imported)


def test_guard_catches_undocumented_names():
    """The negative control: the stand-in really refuses other PyKdump names."""
    standin.install_path()
    import crash
    import pykdump.API as api

    standin.reset_audit()
    with pytest.raises(AttributeError):
        api.readSU  # noqa: B018
    with pytest.raises(AttributeError):
        api.exec_crash_command  # noqa: B018
    with pytest.raises(AttributeError):
        crash.writemem  # noqa: B018
    assert standin.STATE.forbidden == [
        "pykdump.API.readSU", "pykdump.API.exec_crash_command", "crash.writemem"]
    standin.reset_audit()


# -- the command at the crash prompt -------------------------------------------------

def test_same_answers_as_command_line(crash_session, cli_target):
    s = crash_session
    pfns = pfns_for(s, cli_target)
    assert pfns
    # one full report each, for a few
    for pfn in pfns[:6]:
        want = cli(cli_target, [hex(pfn)])
        assert standin.command("pagewho %#x" % pfn) == want, hex(pfn)
    # the one-line-per-pfn table and JSON for all of them
    args = [str(p) for p in pfns]
    assert standin.command("pagewho " + " ".join(args)) == cli(cli_target, args)
    got = standin.command("pagewho --json " + " ".join(args))
    assert got == cli(cli_target, ["--json"] + args)
    doc = json.loads(got)
    assert doc["kernel"] == cli_target.release()
    assert len(doc["pages"]) + len(doc["errors"]) == len(pfns)
    assert standin.STATE.used <= DOCUMENTED


def _untimed(text: str) -> str:
    """A summary without its run time (the only part allowed to differ)."""
    text = re.sub(r"classified in [0-9.]+ s", "classified in T s", text)
    return re.sub(r'"seconds": [0-9.]+', '"seconds": T', text)


def test_summary_and_address_forms_same_as_command_line(crash_session, cli_target):
    k = kernel_of(cli_target)
    pfn = pfns_for(crash_session, cli_target)[0]
    forms = [
        ["--summary"],
        ["--summary", "--json"],
        ["-p", "%#x" % ((pfn << k.page_shift) + 0x123)],
        ["-a", "%#x" % (k.page_offset + (pfn << k.page_shift))],
        ["--page", "%#x" % k.pfn_to_page(pfn)],
        ["-v", "-l", "%#x-%#x" % (pfn, pfn + 3)],
    ]
    for args in forms:
        want = _untimed(cli(cli_target, args))
        assert want.strip() and "Traceback" not in want
        assert _untimed(standin.command("pagewho " + " ".join(args))) == want, args


def test_help_and_registration(crash_session):
    out = standin.command("help pagewho")
    assert "pagewho - " in out and "SYNOPSIS" in out
    # registering twice: crash's duplicate message, then our one line
    out = standin.command("epython %s" % os.path.join(CRASHEXT, "register.py"))
    assert out.splitlines() == [
        'mpykdump.so: "pagewho" is a duplicate of a currently-existing command',
        'pagewho: not registered: a crash command named "pagewho" already exists',
    ]
    out = standin.command("pagewho --help")
    assert out.startswith("usage: pagewho")
    for opt in standin.PYKDUMP_OPTIONS:
        assert opt not in out, "pagewho must not use PyKdump's option %s" % opt


def test_core_uses_no_pykdump_option_names():
    parser = command.make_parser(lambda s: None)
    ours = set(parser._option_string_actions)  # argparse keeps every option string here
    assert ours.isdisjoint(standin.PYKDUMP_OPTIONS)


def test_pykdump_strips_its_options(crash_session, tmp_path):
    """What the program sees after PyKdump took its options away."""
    probe = tmp_path / "probe.py"
    probe.write_text("import sys\nsys.stdout.write(repr(sys.argv[1:]) + '\\n')\nsys.stdout.flush()\n")
    out = standin.command("epython %s --debug 3 0x10 --timeout=5 --json --reload -l" % probe)
    assert out == "['0x10', '--json', '-l']\n"


def test_epython_without_registration(crash_session, cli_target, monkeypatch):
    """docs/crash.md: "epython .../crashext/pagewho.py PFN" works without register.py."""
    monkeypatch.delenv("PYKDUMPPATH")
    pfn = pfns_for(crash_session, cli_target)[0]
    assert standin.command("epython %s %#x" % (PROGRAM, pfn)) == cli(cli_target, [hex(pfn)])


def test_program_found_only_through_pykdumppath(crash_session, monkeypatch):
    monkeypatch.delenv("PYKDUMPPATH")
    assert standin.command("pagewho 1") == " Cannot find the program <pagewho>\n"


BAD_INPUT = [
    "pagewho notanumber",
    "pagewho -5",
    "pagewho 0x10000000000000000",
    "pagewho 0xfffffffffffff",
    "pagewho --nosuchoption",
    "pagewho",
    "pagewho --page 0x1234",
    "pagewho -a 0xffff800000000000",
    "pagewho 10-5",
    "pagewho 0-0xffffffff",
]


def _assert_one_error_line(out: str, line: str) -> None:
    assert out.endswith("\n"), (line, out)
    assert len(out.splitlines()) == 1, (line, out)
    assert out.startswith("pagewho: "), (line, out)
    assert "Traceback" not in out


def test_bad_input_one_line_and_session_goes_on(crash_session, cli_target):
    good = "pagewho %#x" % pfns_for(crash_session, cli_target)[0]
    want = standin.command(good)
    assert want and not want.startswith("pagewho: ")
    for line in BAD_INPUT:
        _assert_one_error_line(standin.command(line), line)
        assert standin.command(good) == want, "session broken after %r" % line


def test_failures_inside_crash_one_line(crash_session, cli_target, monkeypatch):
    """crash's readmem failing, Ctrl-C, and a bug in pagewho: one line each,
    no traceback, and the next command works."""
    import crash
    import pykdump.API as api

    good = "pagewho %#x" % pfns_for(crash_session, cli_target)[0]
    want = standin.command(good)
    real = api.readmem
    # (whatever the core makes of a dump it cannot read at all, it is one line)
    for exc, expect in ((crash.error("readmem error at addr 0x1, reading 8 bytes"), "pagewho: "),
                        (KeyboardInterrupt(), "pagewho: interrupted"),
                        (RuntimeError("boom"), "internal error: RuntimeError: boom")):
        def failing(addr, size, mtype=1, _e=exc):
            raise _e

        monkeypatch.setattr(api, "readmem", failing)
        adapter = _adapter()
        monkeypatch.setattr(adapter, "readmem", failing)
        adapter._cache["key"] = None  # make it rebuild its model with failing reads
        out = standin.command(good)
        _assert_one_error_line(out, repr(exc))
        assert expect in out
        monkeypatch.setattr(api, "readmem", real)
        monkeypatch.setattr(adapter, "readmem", real)
        assert standin.command(good) == want


def test_survives_what_other_programs_leave_behind(crash_session, cli_target, monkeypatch):
    """PyKdump runs every program in one __main__ and never unloads modules:
    pagewho must work after a program clobbered its names, or imported
    crashext/pagewho.py itself as a module called "pagewho"."""
    import types

    good = "pagewho %#x" % pfns_for(crash_session, cli_target)[0]
    want = standin.command(good)
    standin.STATE.main_ns["_setup_path"] = None
    standin.STATE.main_ns["pagewho_pykdump"] = 42
    assert standin.command(good) == want
    monkeypatch.setitem(sys.modules, "pagewho", types.ModuleType("pagewho"))
    assert standin.command(good) == want


def test_error_lines_carry_no_escape_sequences(crash_session, cli_target, monkeypatch):
    """Whatever text an error carries (kernel strings end up in messages), the
    crash prompt gets one printable line."""
    adapter = _adapter()
    real = adapter.command.run
    for exc in (RuntimeError("\x1b[2J\x1b]0;owned\x07evil\nsecond line\r"),
                crash.error("readmem \x1b[31mred\x1b[0m\n")):
        def boom(target, argv, write, _e=exc):
            raise _e

        monkeypatch.setattr(adapter.command, "run", boom)
        out = standin.command("pagewho 1")
        _assert_one_error_line(out, repr(exc))
        assert all(c.isprintable() for c in out[:-1]), repr(out)
    monkeypatch.setattr(adapter.command, "run", real)
    good = "pagewho %#x" % pfns_for(crash_session, cli_target)[0]
    assert standin.command(good).startswith("pfn %#x" % pfns_for(crash_session, cli_target)[0])


def test_cache_reused_for_the_same_dump(crash_session, cli_target):
    adapter = _adapter()
    pfn = pfns_for(crash_session, cli_target)[0]
    first = standin.command("pagewho %#x" % pfn)
    target = adapter._cache["target"]
    reads = standin.STATE.reads
    second = standin.command("pagewho %#x" % pfn)
    assert adapter._cache["target"] is target
    assert second == first
    # the model was not learned again: far fewer reads the second time
    assert standin.STATE.reads - reads < reads / 2 or reads < 50


def test_cache_never_serves_another_dump(sample, sample_bookworm, monkeypatch, tmp_path):
    """Two dumps in ONE interpreter (sys.modules and __main__ kept): each
    answer is about the dump crash has open, never the cached one."""
    if sample.suite == sample_bookworm.suite:
        pytest.skip("compares each other kernel with bookworm's")
    avail = [(sample, vmcore_of(sample)), (sample_bookworm, vmcore_of(sample_bookworm))]
    adapter = _adapter()
    monkeypatch.setenv("PYKDUMPPATH", CRASHEXT)
    monkeypatch.chdir(tmp_path)
    seen = []
    for s, vmcore in avail + avail[:1]:
        standin.open_dump(vmcore, str(s.vmlinux))
        standin.reset_audit()
        standin.command("epython %s" % os.path.join(CRASHEXT, "register.py"))
        doc = json.loads(standin.command("pagewho --json 1"))
        release = standin.STATE.release
        assert doc["kernel"] == release
        target = adapter._cache["target"]
        assert kernel_of(target).release == release
        seen.append(target)
        assert standin.STATE.tracebacks == [] and standin.STATE.forbidden == []
    # a new target (so a new kernel model) for each change of dump
    assert seen[0] is not seen[1] and seen[2] is not seen[0]


# -- the core inside PyKdump's trimmed Python ------------------------------------------

# Modules PyKdump's embedded stdlib lacks (shared/PYKDUMP.md), and tabulate,
# which does not import there.
MISSING = ["json", "csv", "logging", "subprocess", "tempfile", "hashlib", "html",
           "importlib.metadata", "ctypes", "pickle", "sqlite3", "glob", "decimal",
           "fractions", "statistics", "calendar", "unittest", "tabulate"]
# Front ends and adapters that never run inside crash
NOT_IN_CRASH = {"pagewho.drgn_target", "pagewho.cli", "pagewho.drgn_plugin"}

GUARD = r'''
import builtins, importlib, os, pkgutil, sys
MISSING = set(%(missing)r)
NOT_IN_CRASH = set(%(not_in_crash)r)
sys.path.insert(0, %(standin)r)
import standin                       # drgn is the stand-in's, loaded before the guard
standin.open_dump(%(vmcore)r, %(vmlinux)r)

def refused(name):
    return any(name == m or name.startswith(m + ".") for m in MISSING)

class Refuse:
    """A meta path finder: these modules do not exist in PyKdump's Python."""
    def find_spec(self, name, path=None, target=None):
        if refused(name):
            raise ImportError("%%s is not in PyKdump's embedded Python" %% name)
        return None

for name in list(sys.modules):
    if refused(name):
        del sys.modules[name]
sys.meta_path.insert(0, Refuse())
real_import = builtins.__import__

def guarded(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__", "")
    if level == 0 and refused(name) and (importer.startswith("pagewho") or importer == "__main__"):
        raise ImportError("%%s is not in PyKdump's embedded Python (imported by %%s)" %% (name, importer))
    return real_import(name, globals, locals, fromlist, level)
builtins.__import__ = guarded

import pagewho
done = []
for info in pkgutil.walk_packages(pagewho.__path__, "pagewho."):
    if info.name in NOT_IN_CRASH:
        continue
    importlib.import_module(info.name)
    done.append(info.name)
sys.stderr.write("imported: %%s\n" %% " ".join(done))
os.environ["PYKDUMPPATH"] = %(crashext)r
assert standin.command("epython " + os.path.join(%(crashext)r, "register.py")) == ""
out = standin.command("pagewho " + %(args)r)
sys.stdout.write(out)
assert not standin.STATE.tracebacks, standin.STATE.tracebacks
assert not standin.STATE.forbidden, standin.STATE.forbidden
'''


def test_core_runs_without_the_missing_modules(dump, cli_target, tmp_path):
    s, vmcore = dump
    pfns = pfns_for(s, cli_target)[:12]
    for extra in ([], ["--json"]):
        args = extra + [str(p) for p in pfns]
        script = GUARD % {
            "missing": MISSING, "not_in_crash": sorted(NOT_IN_CRASH), "standin": STANDIN,
            "vmcore": vmcore, "vmlinux": str(s.vmlinux), "crashext": CRASHEXT,
            "args": " ".join(args),
        }
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           cwd=str(tmp_path), timeout=600,
                           env=dict(os.environ, PYTHONPATH=REPO))
        assert r.returncode == 0, r.stderr[-3000:]
        assert "pagewho.command" in r.stderr and "pagewho.owner" in r.stderr
        assert r.stdout == cli(cli_target, args)


def test_program_file_is_what_pykdump_runs():
    """The documented layout: PYKDUMPPATH/pagewho.py exists and is the thin entry."""
    assert os.path.isfile(PROGRAM)
    src = open(PROGRAM).read()
    assert "pagewho_pykdump" in src and "__main__" in src
