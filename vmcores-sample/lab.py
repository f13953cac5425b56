"""The sample-vmcore lab: real Debian cloud kernels, dumped, with ground truth.

    import sys; sys.path.insert(0, "<repo>/vmcores-sample")
    import lab
    s = lab.sample("bookworm")        # builds on first use, then cached
    s.vmlinux, s.vmcore_elf, s.vmcore_kdump, s.truth["records"], s.kpageflags()
    with lab.live_guest("bookworm") as g:   # stopped guest, gdbstub on g.host:g.gdb_port
        ...

Samples are cached per kernel release in $PAGEWHO_CACHE/vmcores/<release>/
(default ~/.cache/pagewho).  See README.md for the truth format.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import lab_elf  # noqa: E402
import lab_guest  # noqa: E402
import lab_kernels  # noqa: E402

SUITES = ("bullseye", "bookworm", "trixie", "forky")
# Extra sample ids: a suite plus a guest memory size (only the benchmark uses it).
VARIANTS = {"bookworm-4g": ("bookworm", 4096)}
DEFAULT_MEM_MB = 1024
FORMAT = 4  # truth.json format; bump when its meaning changes (forces a rebuild)
# 2: the truth write path is warmed before the kpageflags snapshot
# 3: ... twice, pinned to cpu 0 (per-cpu caches warmed where they are used)
# 4: dirty.bin re-dirtied just before the snapshot (6.1 wrote it back meanwhile)
MAX_TRIES = 3  # a guest that dies before READY is retried
# How long a suite's mirror index is trusted before asking the mirror again.
INDEX_MAX_AGE = float(os.environ.get("PAGEWHO_INDEX_MAX_AGE", 6 * 3600))
KDUMP_LEVEL = 31
# Tried in turn when -d 31 loses slab pages: 23 keeps "user" pages (bit 8),
# 7 also keeps free pages (bit 16).
KDUMP_FALLBACK_LEVELS = (23, 7)

# Kinds the workload plants; truth["kinds"] says, for each, present or why not.
PLANTED_KINDS = ("pagecache", "file-mmap", "pagecache-dirty", "shmem", "anon", "thp",
                 "hugetlb", "hugetlb-free", "slab", "ksm", "swapcache")
# KPF_* bits (include/uapi/linux/kernel-page-flags.h)
KPF = {"locked": 0, "referenced": 2, "uptodate": 3, "dirty": 4, "lru": 5, "active": 6,
       "slab": 7, "writeback": 8, "reclaim": 9, "buddy": 10, "mmap": 11, "anon": 12,
       "swapcache": 13, "swapbacked": 14, "compound_head": 15, "compound_tail": 16,
       "huge": 17, "unevictable": 18, "hwpoison": 19, "nopage": 20, "ksm": 21, "thp": 22,
       "offline": 23, "zero_page": 24, "idle": 25, "pgtable": 26}


def cache_root() -> Path:
    return Path(os.environ.get("PAGEWHO_CACHE", Path.home() / ".cache" / "pagewho"))


def log(msg: str) -> None:
    print(f"[lab] {msg}", file=sys.stderr, flush=True)


def _read_u64(path: Path) -> array:
    a = array("Q")
    a.frombytes(path.read_bytes())
    if sys.byteorder != "little":
        a.byteswap()
    return a


class Sample:
    """One dumped guest: kernel files, dumps and truth (paths are pathlib.Path)."""

    def __init__(self, suite: str, kdir: Path, sdir: Path):
        self.suite = suite
        self.dir = sdir
        self.vmlinux = kdir / "vmlinux"
        self.vmlinuz = kdir / "vmlinuz"
        self.system_map = kdir / "System.map"
        self.vmcore_elf = sdir / "vmcore.elf"
        self.vmcore_kdump = sdir / "vmcore.kdump"
        self.truth_path = sdir / "truth.json"
        self.truth = json.loads(self.truth_path.read_text())
        self.release = self.truth["release"]

    def kpageflags(self) -> array:
        """/proc/kpageflags as the guest saw it: array('Q') indexed by pfn."""
        return _read_u64(self.dir / "kpageflags.bin")

    def kpagecount(self) -> array:
        return _read_u64(self.dir / "kpagecount.bin")

    def __repr__(self):
        return f"Sample({self.suite!r}, {self.release!r}, {str(self.dir)!r})"


# ---------------------------------------------------------------- kernels

def _suite_file(suite: str) -> Path:
    return cache_root() / "suites" / f"{suite}.json"


def kernel_dir(release: str) -> Path:
    return cache_root() / "vmcores" / release


def _kernel_complete(kdir: Path) -> bool:
    return (kdir / "kernel-complete").exists()


def kernel(suite: str, refresh: bool = False) -> tuple[str, Path]:
    """(release, directory) of the newest kernel of suite, fetched if needed.

    The mirror index is consulted at most every INDEX_MAX_AGE seconds (or when
    refresh); when it cannot be reached the last kernel fetched is used.
    """
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; one of {SUITES}")
    root = cache_root()
    sfile = _suite_file(suite)
    known = json.loads(sfile.read_text()) if sfile.exists() else None
    fresh = lab_kernels.index_age(root, suite) < INDEX_MAX_AGE
    if known and not refresh and fresh and _kernel_complete(kernel_dir(known["release"])):
        return known["release"], kernel_dir(known["release"])
    # one fetcher per suite at a time (build.py and test processes may race)
    with _locked(root / "locks" / f"{suite}.lock"):
        return _resolve_kernel(suite, known, refresh)


def _resolve_kernel(suite: str, known, refresh: bool) -> tuple[str, Path]:
    root = cache_root()
    sfile = _suite_file(suite)
    if sfile.exists():
        known = json.loads(sfile.read_text())
    fresh = lab_kernels.index_age(root, suite) < INDEX_MAX_AGE
    if known and not refresh and fresh and _kernel_complete(kernel_dir(known["release"])):
        return known["release"], kernel_dir(known["release"])  # another process fetched it
    try:
        lab_kernels.update_index(root, suite)
        cands = lab_kernels.candidates(root, suite)
    except (lab_kernels.IndexUnavailable, subprocess.SubprocessError) as e:
        if known and _kernel_complete(kernel_dir(known["release"])):
            log(f"{suite}: mirror index unavailable ({e}); using cached {known['release']}")
            return known["release"], kernel_dir(known["release"])
        raise
    if not cands:
        raise RuntimeError(f"{suite}: no cloud kernel with a -dbg package in the index")
    # (release, packages) the mirror would not serve last time; not retried
    # every time the index is re-read, only on refresh (rebuild=True)
    unavailable = [] if refresh else [s for s in (known or {}).get("skipped", [])]
    skipped = []
    for cand in cands:
        kdir = kernel_dir(cand["release"])
        if _kernel_complete(kdir):
            break
        pk = json.loads(json.dumps(cand["packages"]))
        old = [s for s in unavailable if s["release"] == cand["release"] and s.get("packages") == pk]
        if old:
            skipped.append(old[0])
            continue
        try:
            _fetch(suite, cand, kdir)
            break
        except RuntimeError as e:
            # bullseye's index lists -dbg packages the mirror answers 404 for
            log(f"{suite}: {cand['release']} unavailable ({e}); trying an older ABI")
            skipped.append({"release": cand["release"], "packages": cand["packages"],
                            "error": str(e)[-300:]})
            shutil.rmtree(kdir, ignore_errors=True)
    else:
        raise RuntimeError(f"{suite}: no kernel whose packages all download: {skipped}")
    sfile.parent.mkdir(parents=True, exist_ok=True)
    sfile.write_text(json.dumps({"suite": suite, "release": cand["release"],
                                 "packages": cand["packages"], "skipped": skipped}, indent=1))
    if known and known["release"] != cand["release"]:
        # the mirror moved on: the previous kernel and its samples are stale
        log(f"{suite}: {cand['release']} replaces {known['release']}; removing the old one")
        shutil.rmtree(kernel_dir(known["release"]), ignore_errors=True)
    return cand["release"], kdir


def _fetch(suite: str, cand: dict, kdir: Path) -> None:
    log(f"{suite}: fetching {cand['release']} {cand['packages']}")
    shutil.rmtree(kdir, ignore_errors=True)
    kdir.mkdir(parents=True)
    timings: dict = {}
    lab_kernels.fetch_kernel(cache_root(), suite, cand, kdir, timings)
    (kdir / "kernel.json").write_text(json.dumps(
        {"suite": suite, "release": cand["release"], "packages": cand["packages"],
         "timings": timings}, indent=1))
    (kdir / "kernel-complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    log(f"{suite}: kernel {cand['release']} in {kdir} ({timings})")


# ---------------------------------------------------------------- samples

def _sample_dir(kdir: Path, mem_mb: int) -> Path:
    return kdir if mem_mb == DEFAULT_MEM_MB else kdir / f"mem-{mem_mb}M"


def _parse_mem(mem) -> int:
    if mem is None:
        return DEFAULT_MEM_MB
    if isinstance(mem, int):
        return mem
    s = str(mem).strip().upper()
    return int(float(s[:-1]) * 1024) if s.endswith("G") else int(s.rstrip("M"))


def _sample_complete(sdir: Path) -> bool:
    stamp = sdir / "complete"
    if not stamp.exists():
        return False
    try:
        return json.loads(stamp.read_text()).get("format") == FORMAT
    except ValueError:
        return False


def sample(suite: str, rebuild: bool = False, mem=None) -> Sample:
    """The dumped guest of suite's newest cloud kernel, built on demand.

    suite is one of SUITES or a VARIANTS id ("bookworm-4g"); mem ("4G", 4096)
    picks the guest's memory size.  rebuild=True re-dumps the guest (and
    re-checks the mirror index).
    """
    if suite in VARIANTS:
        suite, mem_mb = VARIANTS[suite]
    else:
        mem_mb = _parse_mem(mem)
    release, kdir = kernel(suite, refresh=rebuild)
    sdir = _sample_dir(kdir, mem_mb)
    # One builder at a time per sample: several test processes (or a test
    # and build.py) may ask for the same sample at once.
    with _locked(kdir / ("build-%d.lock" % mem_mb)):
        if rebuild or not _sample_complete(sdir):
            _build_sample(suite, release, kdir, sdir, mem_mb)
    return Sample(suite, kdir, sdir)


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _stage_guest(kdir: Path, work: Path, mem_mb: int, timings: dict) -> tuple:
    t = time.monotonic()
    lab_guest.compile_workload(work / "init")
    initrd = work / "initrd.gz"
    lab_guest.build_initramfs(initrd, kdir / "qemu_fw_cfg.ko", work / "init")
    # the tar holds kpageflags + kpagecount (8 bytes per pfn each) and texts
    disks = lab_guest.build_disks(work, truth_mb=64 + mem_mb * 2 // 256)
    timings["initramfs_s"] = round(time.monotonic() - t, 1)
    return initrd, disks


def _boot(kdir: Path, work: Path, mem_mb: int, timings: dict, gdb: bool = False,
          logdir: Path | None = None):
    """Boot until READY, retrying a guest that dies.

    Returns (proc, qmp, disks, cmd, tries, gdb_port); with gdb a fresh free
    port is picked for each try (another process may take it meanwhile).
    """
    errors = []
    for attempt in range(1, MAX_TRIES + 1):
        initrd, disks = _stage_guest(kdir, work, mem_mb, timings)
        gdb_port = lab_guest.free_port() if gdb else None
        cmd = lab_guest.qemu_cmd(kdir, work, initrd, disks, mem_mb, gdb_port)
        try:
            proc, qmp, secs = lab_guest.boot_until_ready(cmd, work, lab_guest.BOOT_TIMEOUT)
        except lab_guest.GuestDied as e:
            log(f"attempt {attempt}: {e}")
            errors.append(str(e)[-2000:])
            # kept beside the sample (the work dir is removed) for a post-mortem
            shutil.copy(work / "serial.log", (logdir or work) / f"serial-failed-{attempt}.log")
            continue
        timings["boot_to_ready_s"] = round(secs, 1)
        return proc, qmp, disks, cmd, attempt, gdb_port
    raise RuntimeError(f"guest never reached READY in {MAX_TRIES} tries:\n" + "\n".join(errors))


def _system_map_text(kdir: Path) -> int:
    with open(kdir / "System.map") as f:
        for line in f:
            addr, _, name = line.split()
            if name == "_text":
                return int(addr, 16)
    raise RuntimeError("no _text in System.map")


def make_truth(tar: dict, suite: str, release: str, kdir: Path, mem_mb: int) -> dict:
    """truth.json's dict from the files the guest wrote (see README.md)."""
    records, missing, slabs, tasks, info = [], {}, [], [], {}
    for line in tar["guest.jsonl"].decode().splitlines():
        o = json.loads(line)
        t = o.pop("type")
        if t == "record":
            records.append(o)
        elif t == "missing":
            missing.setdefault(o["kind"], o["reason"])
        elif t == "slab":
            slabs.append(o)
        elif t == "task":
            tasks.append(o)
        elif t == "info":
            info[o["key"]] = o["value"]
    flags = array("Q")
    flags.frombytes(tar["kpageflags.bin"])
    count = array("Q")
    count.frombytes(tar["kpagecount.bin"])
    records += _free_hugetlb(records, flags)
    text_map = _system_map_text(kdir)
    text_seen = info.get("kallsyms_text")
    proc = {k.split("/", 1)[1]: v.decode(errors="replace") for k, v in tar.items()
            if k.count("/") == 1 and k.startswith(("proc/", "sys/"))}
    maps = {k.split("/")[1]: v.decode(errors="replace") for k, v in tar.items()
            if k.startswith("proc/") and k.endswith("/maps")}
    truth = {
        "format": FORMAT,
        "suite": suite,
        "release": info.get("uname_r"),
        "uname_v": info.get("uname_v"),
        "mem_mb": mem_mb,
        "max_pfn": len(flags),
        "kaslr": {"kallsyms_text": text_seen, "system_map_text": text_map,
                  "offset": None if text_seen is None else text_seen - text_map},
        "records": records,
        "slab_caches": slabs,
        "slab_workload": info.get("slab_workload"),
        "tasks": tasks,
        "missing": missing,
        "proc": proc,
        "maps": maps,
        "kpageflags": "kpageflags.bin",
        "kpagecount": "kpagecount.bin",
        "kpf_bits": KPF,
    }
    if truth["release"] != release:
        raise RuntimeError(f"guest runs {truth['release']}, expected {release}")
    truth["kinds"] = _kinds(truth, flags)
    return truth


def _free_hugetlb(records: list, flags: array) -> list:
    """Free hugetlb pages, found as the guest saw them: KPF_HUGE heads nobody maps."""
    mapped = {r["pfn"] for r in records if r["kind"] == "hugetlb"}
    head = 1 << KPF["huge"] | 1 << KPF["compound_head"]
    return [{"kind": "hugetlb-free", "pfn": pfn, "nr_pages": 512, "pid": None, "comm": None,
             "vaddr": None, "mappers": [], "order": 9, "in_use": False,
             "source": "kpageflags: KPF_HUGE|KPF_COMPOUND_HEAD, not in a pagemap"}
            for pfn, f in enumerate(flags) if f & head == head and pfn not in mapped]


def _kinds(truth: dict, flags: array) -> dict:
    """kind -> "present (N)" or the reason it is absent on this kernel."""
    n = {}
    for r in truth["records"]:
        n[r["kind"]] = n.get(r["kind"], 0) + 1
    n["slab"] = len(truth["slab_caches"])
    out = {}
    for kind in PLANTED_KINDS:
        if n.get(kind):
            out[kind] = f"present ({n[kind]})"
        else:
            out[kind] = truth["missing"].get(kind, "absent, no reason recorded")
    pgt = sum(1 for f in flags if f >> KPF["pgtable"] & 1)
    out["pagetable"] = (f"present in kpageflags ({pgt} pfns with KPF_PGTABLE)" if pgt else
                        "no KPF_PGTABLE in this kernel's kpageflags; VmPTE per task in tasks")
    out["kernel-stack"] = "KernelStack in proc/meminfo; stacks of every task in tasks"
    out["vmalloc"] = "proc/vmallocinfo"
    return out


def _makedumpfile(kdir: Path, elf: Path, out: Path, level: int, timings: dict) -> None:
    """makedumpfile -c -d level, on a copy whose program headers sit at offset 64.

    The guest's VMCOREINFO note (the qemu_fw_cfg driver hands it to QEMU's
    vmcoreinfo device) is enough for filtering; measured on 6.1 it gives the
    same page bitmap as -x vmlinux in 1 s instead of 25 s (no DWARF to parse).
    -x vmlinux is the fallback when the note-only run fails.
    """
    fixed = elf.with_name("vmcore.phdr64.elf")
    t = time.monotonic()
    try:
        lab_elf.phdrs_at_64(elf, fixed)
        errors = []
        for extra in ([], ["-x", str(kdir / "vmlinux")]):
            out.unlink(missing_ok=True)
            r = subprocess.run(["makedumpfile", "-c", "-d", str(level), *extra,
                                str(fixed), str(out)], capture_output=True, text=True, timeout=900)
            if r.returncode == 0:
                break
            errors.append(f"makedumpfile -d {level} {' '.join(extra)}: "
                          f"{r.stdout[-600:]} {r.stderr[-600:]}")
        else:
            raise RuntimeError("\n".join(errors))
    finally:
        fixed.unlink(missing_ok=True)
    timings[f"makedumpfile_d{level}_s"] = round(time.monotonic() - t, 1)


def _kdump_coverage(kdump: Path, truth: dict, flags: array) -> dict:
    """Which pages a filtered dump kept: slab pages and each planted kind."""
    _, bitmap = lab_elf.kdump_dumped_pfns(kdump)
    slab = [pfn for pfn, f in enumerate(flags) if f >> KPF["slab"] & 1]
    kept_slab = sum(lab_elf.bit(bitmap, p) for p in slab)
    kinds = {}
    for r in truth["records"]:
        if r.get("pfn") is None:
            continue
        k = kinds.setdefault(r["kind"], [0, 0])
        k[0] += lab_elf.bit(bitmap, r["pfn"])
        k[1] += 1
    dumped = sum(bin(b).count("1") for b in bitmap)
    return {"pages_dumped": dumped, "slab_pages": len(slab), "slab_pages_kept": kept_slab,
            "planted_kept": {k: f"{a}/{b}" for k, (a, b) in sorted(kinds.items())}}


def _build_sample(suite: str, release: str, kdir: Path, sdir: Path, mem_mb: int) -> None:
    log(f"{suite}: building sample of {release} with {mem_mb} MiB in {sdir}")
    sdir.mkdir(parents=True, exist_ok=True)
    (sdir / "complete").unlink(missing_ok=True)
    kinfo = json.loads((kdir / "kernel.json").read_text())
    timings = {k: v for k, v in kinfo.get("timings", {}).items()}
    for stale in sdir.glob("pagewho-guest-*"):  # left by a builder that was killed
        shutil.rmtree(stale, ignore_errors=True)
    for stale in sdir.glob("serial-failed-*.log"):
        stale.unlink()
    work = Path(tempfile.mkdtemp(prefix="pagewho-guest-", dir=sdir))
    try:
        proc, qmp, disks, cmd, tries, _ = _boot(kdir, work, mem_mb, timings, logdir=sdir)
        try:
            qmp.execute("stop")
            t = time.monotonic()
            elf = sdir / "vmcore.elf"
            elf.unlink(missing_ok=True)
            qmp.execute("dump-guest-memory", paging=False, protocol=f"file:{elf}")
            timings["dump_s"] = round(time.monotonic() - t, 1)
            elf.chmod(0o644)  # QEMU creates it owner-read-only
        finally:
            lab_guest.stop_and_quit(proc, qmp)
        tar = lab_guest.read_truth_disk(disks["truth"])
        truth = make_truth(tar, suite, release, kdir, mem_mb)
        (sdir / "kpageflags.bin").write_bytes(tar["kpageflags.bin"])
        (sdir / "kpagecount.bin").write_bytes(tar["kpagecount.bin"])
        shutil.copy(work / "serial.log", sdir / "serial.log")
        flags = array("Q")
        flags.frombytes(tar["kpageflags.bin"])
        truth["dump"] = _make_kdumps(kdir, sdir, truth, flags, timings)
        truth["qemu"] = {"cmdline": cmd, "tries": tries}
        truth["kernel_packages"] = kinfo.get("packages")
        truth["timings"] = timings
        _write_atomic(sdir / "truth.json", json.dumps(truth, indent=1))
        (sdir / "complete").write_text(json.dumps(
            {"format": FORMAT, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
        log(f"{suite}: sample ready in {sdir} {timings}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_atomic(path: Path, text: str) -> None:
    """Readers never see a half-written file (tests read samples while others build)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _make_kdumps(kdir: Path, sdir: Path, truth: dict, flags: array, timings: dict) -> dict:
    """vmcore.kdump: -d 31 when that keeps every slab page, else a fallback level.

    Measured with makedumpfile 1.7.2 on 6.12: -d 31 and -d 15 drop ~2% of the
    slab pages, -d 23 keeps them all.  The dropped ones are order-0 slab pages
    whose struct slab word at page->mapping has both low bits set, so they
    look like KSM/anon pages (the guest's own kpageflags says SLAB|ANON|KSM
    for them) and fall to the user-page filter (bit 8).  The -d 31 file is
    then kept as vmcore-d31.kdump so both behaviours can be tested.
    """
    kdump = sdir / "vmcore.kdump"
    d31 = sdir / "vmcore-d31.kdump"
    d31.unlink(missing_ok=True)
    _makedumpfile(kdir, sdir / "vmcore.elf", kdump, KDUMP_LEVEL, timings)
    cov = _kdump_coverage(kdump, truth, flags)
    info = {"elf": "vmcore.elf", "kdump": "vmcore.kdump", "kdump_level": KDUMP_LEVEL,
            "coverage": {str(KDUMP_LEVEL): cov},
            "makedumpfile": _makedumpfile_version()}
    if cov["slab_pages_kept"] == cov["slab_pages"]:
        return info
    kdump.rename(d31)
    info["kdump_d31"] = d31.name
    for level in KDUMP_FALLBACK_LEVELS:
        _makedumpfile(kdir, sdir / "vmcore.elf", kdump, level, timings)
        c = info["coverage"][str(level)] = _kdump_coverage(kdump, truth, flags)
        info["kdump_level"] = level
        if c["slab_pages_kept"] == c["slab_pages"]:
            break
    info["why"] = (f"-d {KDUMP_LEVEL} kept {cov['slab_pages_kept']} of {cov['slab_pages']} "
                   f"slab pages; vmcore.kdump uses -d {info['kdump_level']}")
    return info


def _makedumpfile_version() -> str:
    r = subprocess.run(["makedumpfile", "-v"], capture_output=True, text=True)
    return (r.stdout or r.stderr).split("\n")[0].strip()


# ---------------------------------------------------------------- live mode

class LiveGuest:
    """A booted guest stopped at READY, with QEMU's gdbstub on 127.0.0.1."""

    host = "127.0.0.1"

    def __init__(self, suite, release, kdir, proc, qmp, gdb_port, truth, work):
        self.suite, self.release = suite, release
        self.vmlinux = kdir / "vmlinux"
        self.system_map = kdir / "System.map"
        self.proc, self.qmp, self.gdb_port, self.truth, self.work = proc, qmp, gdb_port, truth, work

    def kpageflags(self) -> array:
        return _read_u64(self.work / "kpageflags.bin")

    def kpagecount(self) -> array:
        return _read_u64(self.work / "kpagecount.bin")

    def close(self) -> None:
        """Kill QEMU (bounded waits); safe to call more than once."""
        if self.proc is not None:
            lab_guest.stop_and_quit(self.proc, self.qmp)
            self.proc = None
        shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextlib.contextmanager
def live_guest(suite: str, mem=None):
    """Boot suite's guest, wait for READY, stop it, expose the gdbstub; always kill QEMU.

    A gdb session attached with `target remote host:port` should `detach`
    before quitting, otherwise gdb kills the guest.
    """
    if suite in VARIANTS:
        suite, mem_mb = VARIANTS[suite]
    else:
        mem_mb = _parse_mem(mem)
    release, kdir = kernel(suite)
    work = Path(tempfile.mkdtemp(prefix=f"pagewho-live-{suite}-"))
    proc = qmp = None
    try:
        timings: dict = {}
        proc, qmp, disks, cmd, tries, port = _boot(kdir, work, mem_mb, timings, gdb=True)
        qmp.execute("stop")
        tar = lab_guest.read_truth_disk(disks["truth"])
        truth = make_truth(tar, suite, release, kdir, mem_mb)
        truth["mode"] = "live"
        truth["timings"] = timings
        (work / "kpageflags.bin").write_bytes(tar["kpageflags.bin"])
        (work / "kpagecount.bin").write_bytes(tar["kpagecount.bin"])
        (work / "truth.json").write_text(json.dumps(truth, indent=1))
        guest = LiveGuest(suite, release, kdir, proc, qmp, port, truth, work)
        yield guest
    finally:
        if proc is not None:
            if qmp is not None:
                lab_guest.stop_and_quit(proc, qmp)
            lab_guest.kill_qemu(proc)
        shutil.rmtree(work, ignore_errors=True)
