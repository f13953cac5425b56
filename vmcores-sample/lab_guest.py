"""Build the guest (initramfs, disks), boot it in QEMU, talk QMP, collect the truth."""

import atexit
import gzip
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOAD_C = HERE / "workload.c"
BUSYBOX = Path("/bin/busybox")
READY = b"PAGEWHO-READY"
# A guest that panics reboots (panic=-1) and -no-reboot turns that into an exit.
DEATH_SIGNS = (b"PAGEWHO-FAILED", b"Kernel panic", b"---[ end trace")
BOOT_TIMEOUT = float(os.environ.get("PAGEWHO_BOOT_TIMEOUT", 600))  # TCG, 4 GiB guest
QMP_TIMEOUT = 600  # dump-guest-memory of 4 GiB included
CMDLINE = "console=ttyS0 panic=-1 transparent_hugepage=madvise"


# ---------------------------------------------------------------- initramfs

def compile_workload(out: Path) -> None:
    """gcc -static the guest's /init from workload.c."""
    subprocess.run(["gcc", "-O2", "-static", "-Wall", "-o", str(out), str(WORKLOAD_C)],
                   check=True, capture_output=True, timeout=300)


def _newc(name: str, mode: int, data: bytes = b"", ino: int = 1, rdev: tuple = (0, 0)) -> bytes:
    """One entry of a "newc" cpio archive (what the kernel unpacks as initramfs)."""
    nm = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(nm), 0]
    hdr = b"070701" + b"".join(b"%08X" % v for v in fields)
    out = hdr + nm
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return out


def build_initramfs(out: Path, fw_cfg_ko: Path, init_bin: Path) -> None:
    entries = []
    for d in ("dev", "proc", "sys", "data", "shm", "bin"):
        entries.append((d, 0o040755, b"", (0, 0)))
    # /dev/console must exist on the rootfs for init's stdio (init/main.c console_on_rootfs)
    entries.append(("dev/console", 0o020600, b"", (5, 1)))
    entries.append(("init", 0o100755, init_bin.read_bytes(), (0, 0)))
    entries.append(("qemu_fw_cfg.ko", 0o100644, fw_cfg_ko.read_bytes(), (0, 0)))
    entries.append(("bin/busybox", 0o100755, BUSYBOX.read_bytes(), (0, 0)))
    entries.append(("bin/sh", 0o120777, b"busybox", (0, 0)))
    blob = b"".join(_newc(n, m, d, i + 1, r) for i, (n, m, d, r) in enumerate(entries))
    blob += _newc("TRAILER!!!", 0, ino=0)
    out.write_bytes(gzip.compress(blob, compresslevel=1))


def _pattern_file(path: Path, npages: int, tag: str) -> None:
    with open(path, "wb") as f:
        for i in range(npages):
            head = f"PAGEWHO-FILE {tag} page {i}".encode()
            f.write(head + b"F" * (4096 - len(head)))


def build_disks(work: Path, truth_mb: int) -> dict:
    """data.ext4 (files to cache), swap.img, truth.img; returns name -> path."""
    stage = work / "ext4-root"
    stage.mkdir(parents=True, exist_ok=True)
    _pattern_file(stage / "cached.bin", 64, "cached.bin")
    _pattern_file(stage / "mapped.bin", 32, "mapped.bin")
    disks = {"data": work / "data.ext4", "swap": work / "swap.img", "truth": work / "truth.img"}
    for p in disks.values():
        p.unlink(missing_ok=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "pwdata", "-E", "root_owner=0:0",
                    "-d", str(stage), str(disks["data"]), "64M"],
                   check=True, capture_output=True, timeout=120)
    with open(disks["swap"], "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkswap", "-L", "pwswap", str(disks["swap"])],
                   check=True, capture_output=True, timeout=60)
    with open(disks["truth"], "wb") as f:
        f.truncate(truth_mb << 20)
    shutil.rmtree(stage)
    return disks


# ---------------------------------------------------------------- QMP

class QMP:
    """Minimal QEMU Machine Protocol client over a unix socket."""

    def __init__(self, path: Path, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(QMP_TIMEOUT)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.buf = b""
        self._recv()  # greeting
        self.execute("qmp_capabilities")

    def _recv(self) -> dict:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("QMP socket closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, cmd: str, **args):
        msg = {"execute": cmd}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._recv()
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise RuntimeError(f"QMP {cmd}: {r['error']}")
            # asynchronous events (STOP, RESUME, DUMP_COMPLETED ...) are skipped

    def close(self):
        self.sock.close()


# ---------------------------------------------------------------- QEMU

_live: set = set()  # running QEMU processes, killed at interpreter exit


def _kill_all():
    for p in list(_live):
        kill_qemu(p)


atexit.register(_kill_all)


def kill_qemu(proc: subprocess.Popen) -> None:
    """Terminate, then kill, with bounded waits."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    _live.discard(proc)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL QEMU if the process that started it dies.

    atexit and context managers cover exceptions and Ctrl-C; this covers the
    starter being killed outright (no guest is ever left running).
    """
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def qemu_cmd(kdir: Path, work: Path, initrd: Path, disks: dict, mem_mb: int,
             gdb_port: int | None = None) -> list[str]:
    cmd = [
        "qemu-system-x86_64",
        # KVM does not work on these machines (nested AMD); multi-threaded TCG
        # once crashed a 7.2 guest in a text-patching race: single-threaded TCG.
        # PAGEWHO_QEMU_ACCEL=kvm where /dev/kvm really works.
        "-accel", os.environ.get("PAGEWHO_QEMU_ACCEL", "tcg,thread=single"),
        "-m", str(mem_mb), "-smp", "2",
        "-nodefaults", "-display", "none", "-no-reboot",
        "-kernel", str(kdir / "vmlinuz"), "-initrd", str(initrd),
        "-append", CMDLINE,
        "-device", "vmcoreinfo",  # the guest's VMCOREINFO note in the dump
        "-serial", f"file:{work / 'serial.log'}",
        "-qmp", f"unix:{work / 'qmp.sock'},server=on,wait=off",
        # NVMe and ext4 are built into the cloud kernels; virtio is a module
        "-device", "nvme,id=nvc,serial=pagewho",
    ]
    for nsid, name in enumerate(("data", "swap", "truth"), 1):
        cmd += ["-drive", f"if=none,id={name},file={disks[name]},format=raw",
                "-device", f"nvme-ns,bus=nvc,drive={name},nsid={nsid}"]
    if gdb_port is not None:
        cmd += ["-gdb", f"tcp:127.0.0.1:{gdb_port}"]  # never -s: that listens everywhere
    return cmd


def boot_until_ready(cmd: list[str], work: Path, timeout: float = BOOT_TIMEOUT):
    """Start QEMU and wait for READY; returns (proc, qmp, seconds) or raises."""
    log = work / "serial.log"
    log.unlink(missing_ok=True)
    (work / "qmp.sock").unlink(missing_ok=True)
    qlog = open(work / "qemu.log", "wb")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qlog, stderr=qlog,
                            start_new_session=True, preexec_fn=_die_with_parent)
    _live.add(proc)
    t0 = time.monotonic()
    try:
        qmp = QMP(work / "qmp.sock")
        while True:
            text = log.read_bytes() if log.exists() else b""
            if READY in text:
                return proc, qmp, time.monotonic() - t0
            if proc.poll() is not None or any(s in text for s in DEATH_SIGNS):
                tail = text[-1500:].decode(errors="replace")
                qtail = (work / "qemu.log").read_text(errors="replace")[-500:]
                raise GuestDied(f"guest died before READY (qemu rc {proc.poll()}):\n"
                                f"{qtail}\n{tail}")
            if time.monotonic() - t0 > timeout:
                raise GuestDied(f"no READY within {timeout:.0f} s:\n"
                                f"{text[-1500:].decode(errors='replace')}")
            time.sleep(0.2)
    except BaseException:
        kill_qemu(proc)
        raise
    finally:
        qlog.close()


class GuestDied(RuntimeError):
    pass


def stop_and_quit(proc, qmp) -> None:
    """QMP quit, then make sure the process is gone."""
    if qmp is not None:
        try:
            qmp.sock.settimeout(10)
            qmp.execute("quit")
        except (OSError, RuntimeError, ConnectionError, ValueError):
            pass
        qmp.close()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    kill_qemu(proc)


# ---------------------------------------------------------------- truth

def read_truth_disk(path: Path) -> dict:
    """name -> bytes of the tar the guest wrote to the truth namespace."""
    out = {}
    with open(path, "rb") as f:
        data = f.read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        for m in tf:
            if m.isfile():
                out[m.name] = tf.extractfile(m).read()
    if "kpagecount.bin" not in out:
        raise RuntimeError(f"truth disk incomplete: {sorted(out)}")
    return out

