"""Find and fetch Debian cloud kernels with a private apt configuration.

Every suite, the machine's own included, gets its own apt state under the
cache directory, so the system's sources and lists are never touched
(issue 2: "never edit the system's sources").
"""

import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

# suite -> (apt suites to index, pattern of the image package's ABI).
# The ABI pattern keeps each suite on its own kernel line: bullseye-security
# also carries 6.1 backports and bookworm carries 6.12 backports.
SUITE_INFO = {
    "bullseye": (("bullseye", "bullseye-updates", "bullseye-security"), r"5\.10\.0-\d+"),
    "bookworm": (("bookworm", "bookworm-updates", "bookworm-security"), r"6\.1\.0-\d+"),
    "trixie": (("trixie", "trixie-updates", "trixie-security"), r"6\.12\.\d+\+deb13(?:u\d+)?"),
    "forky": (("forky",), r"\d+\.\d+\.\d+\+deb14(?:u\d+)?"),
}

APT_TIMEOUT = 300  # seconds for one apt-get update or download


class IndexUnavailable(RuntimeError):
    """The mirror's index could not be fetched (offline, mirror down)."""


def apt_dir(cache_root: Path, suite: str) -> Path:
    return cache_root / "apt" / suite


def _sources(suite: str) -> str:
    lines = []
    for s in SUITE_INFO[suite][0]:
        url = SECURITY if s.endswith("-security") else MIRROR
        lines.append(f"deb [signed-by={KEYRING}] {url} {s} main\n")
    return "".join(lines)


def _apt_opts(adir: Path) -> list[str]:
    return [
        "-o", f"Dir::Etc::SourceList={adir / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State::Lists={adir / 'lists'}",
        "-o", f"Dir::Cache={adir / 'cache'}",
        "-o", "Dir::Etc::Preferences=/dev/null",
        "-o", "Dir::Etc::PreferencesParts=/dev/null",
        "-o", "APT::Architecture=amd64",
        "-o", "Acquire::Languages=none",
        "-o", "Debug::NoLocking=1",  # private state: no need for the system lock
    ] + (
        # as root, apt would hand downloads to _apt, which cannot write into a
        # private dir under $HOME; other users download as themselves anyway
        ["-o", "APT::Sandbox::User=root"] if os.getuid() == 0 else [])


def update_index(cache_root: Path, suite: str) -> None:
    """apt-get update into the suite's private state; IndexUnavailable on failure."""
    adir = apt_dir(cache_root, suite)
    (adir / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (adir / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (adir / "sources.list").write_text(_sources(suite))
    cmd = ["apt-get", "-q", *_apt_opts(adir), "update"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=APT_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise IndexUnavailable(f"apt-get update {suite}: timed out") from e
    # apt-get update exits 0 even when some sources failed; "W:"/"E:" lines say so.
    bad = [ln for ln in r.stderr.splitlines()
           if ln.startswith("E:") or ln.startswith(("W: Failed", "W: Some index"))]
    if r.returncode != 0 or bad:
        raise IndexUnavailable(f"apt-get update {suite}: {r.returncode} {bad}")
    (adir / "updated").write_text(str(time.time()))


def index_age(cache_root: Path, suite: str) -> float:
    """Seconds since the last successful update of this suite's index."""
    try:
        return time.time() - float((apt_dir(cache_root, suite) / "updated").read_text())
    except (OSError, ValueError):
        return float("inf")


KERNEL_PKG = re.compile(r"linux-(?:image|binary|modules)-.*-cloud-amd64(?:-dbg)?")


def _packages(cache_root: Path, suite: str) -> dict[str, list[str]]:
    """Kernel package name -> versions in the suite's private index.

    apt may keep the lists compressed (lz4 under Acquire::GzipIndexes);
    apt-helper cat-file reads any of its formats.  Parsing here takes ~1 s
    where apt-cache pkgnames + madison took ~6 s per suite.
    """
    out: dict[str, list[str]] = {}
    for f in sorted((apt_dir(cache_root, suite) / "lists").glob("*_Packages*")):
        r = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(f)],
                           capture_output=True, timeout=APT_TIMEOUT, check=True)
        for stanza in re.finditer(rb"^Package: (linux-\S+)\n(?:.+\n)*?Version: (\S+)",
                                  r.stdout, re.M):
            name, ver = stanza.group(1).decode(), stanza.group(2).decode()
            if KERNEL_PKG.fullmatch(name) and ver not in out.setdefault(name, []):
                out[name].append(ver)
    return out


def _abi_key(abi: str) -> list:
    """Sort key for ABIs like 5.10.0-43 or 6.12.57+deb13."""
    return [int(x) if x.isdigit() else x for x in re.split(r"[.+\-]|(?<=\D)(?=\d)", abi) if x]


def _dpkg_newest(versions: list[str]) -> str:
    best = versions[0]
    for v in versions[1:]:
        r = subprocess.run(["dpkg", "--compare-versions", v, "gt", best])
        if r.returncode == 0:
            best = v
    return best


def candidates(cache_root: Path, suite: str) -> list[dict]:
    """Kernels in the index, newest ABI first: dicts with abi, release and packages.

    `packages` maps a role to (package, version):
      image -- contains vmlinuz (forky: the split linux-binary-* package)
      modules -- contains qemu_fw_cfg.ko (older suites: the image package itself)
      dbg -- vmlinux and System.map
    """
    pkgs = _packages(cache_root, suite)
    pat = re.compile(rf"linux-image-({SUITE_INFO[suite][1]})-cloud-amd64")
    found = []
    for name in pkgs:
        m = pat.fullmatch(name)
        if not m:
            continue
        abi = m.group(1)
        release = f"{abi}-cloud-amd64"
        dbg = f"linux-image-{release}-dbg"
        if dbg not in pkgs:
            continue
        roles = {"dbg": dbg}
        # forky splits the image: linux-binary-* has vmlinuz, linux-modules-* the modules
        binary, modules = f"linux-binary-{release}", f"linux-modules-{release}"
        if binary in pkgs:
            roles["image"] = binary
            roles["modules"] = modules if modules in pkgs else binary
        else:
            roles["image"] = roles["modules"] = name
        if any(p not in pkgs for p in roles.values()):
            continue
        packages = {role: (p, _dpkg_newest(pkgs[p])) for role, p in roles.items()}
        found.append({"abi": abi, "release": release, "packages": packages})
    found.sort(key=lambda c: _abi_key(c["abi"]), reverse=True)
    return found


def download(cache_root: Path, suite: str, pkg: str, version: str, dest: Path) -> Path:
    """apt-get download pkg=version into dest; returns the .deb path."""
    adir = apt_dir(cache_root, suite)
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob(f"{pkg}_*.deb"):
        old.unlink()
    cmd = ["apt-get", "-q", *_apt_opts(adir), "download", f"{pkg}={version}"]
    r = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, timeout=APT_TIMEOUT)
    debs = list(dest.glob(f"{pkg}_*.deb"))
    if r.returncode != 0 or len(debs) != 1:
        raise RuntimeError(f"apt-get download {pkg}={version} failed: {r.stderr.strip()[-500:]}")
    return debs[0]


def _extract(deb: Path, out: Path, wanted: dict) -> dict:
    """Stream a .deb's data tar; write each wanted regular file to out/<name>.

    wanted maps an output name to the member basenames that may hold it.
    Reading stops once every wanted file is out: in the -dbg packages up to
    trixie, usr/lib/debug/boot/ sorts before the ~1.8 GB of module debug info
    under usr/lib/debug/lib/, so most of the archive is never decompressed.
    Symlinks are skipped (forky's boot/ has only symlinks to lib/modules/).
    Returns output name -> member name.
    """
    found: dict = {}
    dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=dpkg.stdout, mode="r|") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                base = m.name.rsplit("/", 1)[-1]
                for name, bases in wanted.items():
                    if name not in found and base in bases:
                        with open(out / name, "wb") as f:
                            shutil.copyfileobj(tf.extractfile(m), f, 1 << 20)
                        found[name] = m.name
                if len(found) == len(wanted):
                    break
    finally:
        dpkg.kill()  # stopping early: dpkg-deb would otherwise block on the pipe
        dpkg.stdout.close()
        dpkg.wait(timeout=60)
    if len(found) != len(wanted):
        missing = sorted(set(wanted) - set(found))
        raise RuntimeError(f"{deb.name}: no {missing} ({[wanted[n] for n in missing]})")
    return found


def extract_image(deb: Path, release: str, out: Path) -> None:
    # ./boot/vmlinuz-<release> up to trixie; forky: ./usr/lib/modules/<release>/vmlinuz
    _extract(deb, out, {"vmlinuz": {f"vmlinuz-{release}", "vmlinuz"}})


def extract_fw_cfg(deb: Path, release: str, out: Path) -> None:
    """The signed qemu_fw_cfg module (the -dbg copy is unsigned and taints)."""
    names = {"qemu_fw_cfg.ko" + ext for ext in ("", ".xz", ".zst", ".gz")}
    member = _extract(deb, out, {"qemu_fw_cfg.ko.orig": names})["qemu_fw_cfg.ko.orig"]
    raw = out / "qemu_fw_cfg.ko.orig"
    data = raw.read_bytes()
    if member.endswith(".xz"):
        import lzma
        data = lzma.decompress(data)
    elif member.endswith(".zst"):
        data = subprocess.run(["zstd", "-dc", str(raw)], capture_output=True, check=True).stdout
    elif member.endswith(".gz"):
        import gzip
        data = gzip.decompress(data)
    (out / "qemu_fw_cfg.ko").write_bytes(data)
    raw.unlink()


def extract_dbg(deb: Path, release: str, out: Path) -> None:
    # ./usr/lib/debug/boot/{vmlinux,System.map}-<release> up to trixie; forky keeps
    # them in ./usr/lib/debug/lib/modules/<release>/ (boot/ holds symlinks)
    _extract(deb, out, {"vmlinux": {f"vmlinux-{release}", "vmlinux"},
                        "System.map": {f"System.map-{release}", "System.map"}})


def fetch_kernel(cache_root: Path, suite: str, cand: dict, out: Path, timings: dict) -> None:
    """Download and extract vmlinuz, vmlinux, System.map and qemu_fw_cfg.ko into out."""
    debs = cache_root / "debs" / suite
    release = cand["release"]
    pk = cand["packages"]
    t = time.monotonic()
    paths = {}
    for role in ("dbg", "image", "modules"):  # dbg first: where the mirror 404s
        name, ver = pk[role]
        if name not in [p for p, _ in paths.values()]:
            paths[role] = (name, download(cache_root, suite, name, ver, debs))
        else:
            paths[role] = next(v for v in paths.values() if v[0] == name)
    timings["download_s"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    extract_image(paths["image"][1], release, out)
    extract_fw_cfg(paths["modules"][1], release, out)
    extract_dbg(paths["dbg"][1], release, out)
    timings["extract_s"] = round(time.monotonic() - t, 1)
    # The .debs are big (the -dbg one ~280 MB) and no longer needed.
    for _, p in paths.values():
        p.unlink(missing_ok=True)
    os.sync()
