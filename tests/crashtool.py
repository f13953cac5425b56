"""Run Debian's real `crash` on a dump, in batch mode, for the cross-checks.

Two crash builds are available:

- ``host``: the one installed by ``scripts/setup`` (bookworm: crash 8.0.2);
- ``forky``: Debian forky's crash (9.0.x), which needs a newer glibc than
  the host has, so it runs from a debootstrap'd forky chroot cached under
  ``~/.cache/pagewho/crash-forky`` and built on demand::

      python3 tests/crashtool.py build          # once; needs root + debootstrap
      python3 tests/crashtool.py run forky VMLINUX VMCORE 'kmem -p 1000'
      python3 tests/crashtool.py matrix [SUITE...]  # which crash reads which kernel

The dump and the vmlinux are never copied into the chroot: a private mount
namespace (``unshare --mount``) bind-mounts their directories read-only
inside it, so the mounts disappear with the process, whatever happens.

crash is driven the documented batch way: ``crash -s VMLINUX VMCORE -i
CMDFILE`` with ``exit`` as the last command (crash(8): ``-i file`` runs the
commands in file, ``-s`` silences the banner).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from typing import List, Optional, Sequence

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "pagewho")
CHROOT = os.path.join(CACHE, "crash-forky")
STAMP = os.path.join(CHROOT, ".pagewho-complete")
DEFAULT_MIRROR = "http://deb.debian.org/debian"


class CrashUnavailable(Exception):
    """This crash build cannot be run here (the message says why)."""


def debian_mirror() -> str:
    """The Debian mirror apt already uses (so nothing new is contacted)."""
    env = os.environ.get("PAGEWHO_DEBIAN_MIRROR")
    if env:
        return env
    texts = []
    for path in ("/etc/apt/sources.list", "/etc/apt/sources.list.d/debian.sources"):
        try:
            with open(path) as f:
                texts.append(f.read())
        except OSError:
            pass
    for text in texts:
        for m in re.finditer(r"(?:URIs:\s*|^deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.M):
            uri = m.group(1).rstrip("/")
            if not uri.endswith("-security") and "debian" in uri:
                return uri
    return DEFAULT_MIRROR


def build_chroot(quiet: bool = False) -> str:
    """Build the forky chroot with crash in it, once; return its path.

    Serialised with a lock file so parallel test runs do not both build.
    """
    if os.path.exists(STAMP):
        return CHROOT
    if os.geteuid() != 0:
        raise CrashUnavailable("building the forky chroot needs root")
    if not shutil.which("debootstrap"):
        raise CrashUnavailable("debootstrap is not installed (scripts/setup installs it)")
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, "crash-forky.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(STAMP):
            return CHROOT
        tmp = CHROOT + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = ["debootstrap", "--variant=minbase", "--include=crash", "forky", tmp, debian_mirror()]
        # an older debootstrap has no "forky" script yet; testing uses sid's
        if not os.path.exists("/usr/share/debootstrap/scripts/forky"):
            cmd.append("/usr/share/debootstrap/scripts/sid")
        out = subprocess.DEVNULL if quiet else None
        r = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT if quiet else None)
        if r.returncode != 0:
            raise CrashUnavailable("debootstrap of forky failed (exit %d)" % r.returncode)
        shutil.rmtree(CHROOT, ignore_errors=True)
        os.rename(tmp, CHROOT)
        with open(STAMP, "w") as f:
            f.write(crash_version("forky") + "\n")
    return CHROOT


def crash_version(build: str) -> str:
    """First line of ``crash --version`` for ``build`` ("host" or "forky")."""
    r = subprocess.run(_prefix(build) + ["crash", "--version"], capture_output=True,
                       text=True, timeout=60)
    for line in r.stdout.splitlines():
        if line.startswith("crash "):
            return line.strip()
    raise CrashUnavailable("crash --version printed nothing (%s)" % r.stderr.strip()[:200])


def available(build: str) -> Optional[str]:
    """None when ``build`` can run here, else the reason it cannot."""
    if build == "host":
        return None if shutil.which("crash") else "crash is not installed on the host"
    if build == "forky":
        if os.path.exists(STAMP):
            return None
        if os.environ.get("PAGEWHO_BUILD_CHROOT", "1") == "0":
            return "forky chroot not built (python3 tests/crashtool.py build)"
        try:
            build_chroot(quiet=True)
        except CrashUnavailable as e:
            return str(e)
        return None
    return "unknown crash build %r" % build


def _prefix(build: str) -> List[str]:
    if build == "host":
        return []
    return ["chroot", CHROOT]


def run(build: str, vmlinux: str, vmcore: str, commands: Sequence[str],
        timeout: float = 300, extra: Sequence[str] = ("--no_modules",)) -> str:
    """Run ``commands`` in one batch crash session; return its stdout.

    Raises :class:`CrashUnavailable` when the build cannot run or crash
    failed to start on this dump (the message carries crash's own words).
    """
    why = available(build)
    if why:
        raise CrashUnavailable(why)
    vmlinux = os.path.abspath(vmlinux)
    vmcore = os.path.abspath(vmcore)
    script = "\n".join(list(commands) + ["exit"]) + "\n"
    if build == "host":
        cmdfile = os.path.join(os.path.dirname(vmcore), ".crash-cmds.%d" % os.getpid())
        with open(cmdfile, "w") as f:
            f.write(script)
        argv = ["crash", "-s", *extra, vmlinux, vmcore, "-i", cmdfile]
    else:
        # Bind the two directories read-only at fixed places in the chroot,
        # in a private mount namespace that dies with the process.
        inner = "/mnt/pagewho"
        os.makedirs(CHROOT + inner + "/k", exist_ok=True)
        os.makedirs(CHROOT + inner + "/d", exist_ok=True)
        cmdfile = os.path.join(CHROOT, "tmp", "crash-cmds.%d" % os.getpid())
        with open(cmdfile, "w") as f:
            f.write(script)
        sh = (
            'set -e; mount --bind -o ro "$1" "$R/mnt/pagewho/k"; '
            'mount --bind -o ro "$2" "$R/mnt/pagewho/d"; '
            'mount -t proc proc "$R/proc" 2>/dev/null || true; '
            'shift 2; exec chroot "$R" "$@"'
        )
        argv = ["unshare", "--mount", "--propagation", "private", "env", "R=" + CHROOT,
                "sh", "-c", sh, "sh", os.path.dirname(vmlinux), os.path.dirname(vmcore),
                "crash", "-s", *extra,
                inner + "/k/" + os.path.basename(vmlinux),
                inner + "/d/" + os.path.basename(vmcore),
                "-i", "/tmp/" + os.path.basename(cmdfile)]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                           timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise CrashUnavailable("crash (%s) timed out after %ds" % (build, timeout)) from None
    finally:
        try:
            os.unlink(cmdfile)
        except OSError:
            pass
    out = r.stdout
    if r.returncode != 0:
        # crash gave up (clean_exit(1)); a batch run that got through says "exit"
        fatal = _fatal(out + "\n" + r.stderr) or _why(r.stderr)
        if not fatal and "-d" not in extra:
            # -s can swallow the reason (crash 8.0.2 on 7.x says nothing);
            # crash's own debug level 8 prints the read that failed
            try:
                run(build, vmlinux, vmcore, [], timeout, tuple(extra) + ("-d", "8"))
            except CrashUnavailable as e:
                fatal = str(e).split(": ", 1)[-1].split("; ")[-1]
        raise CrashUnavailable("crash (%s) exited %d: %s" % (build, r.returncode, fatal or "no message"))
    return out


def _why(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "; ".join(lines[-3:])[:300]


def _fatal(text: str) -> Optional[str]:
    """crash's own words when it gave up: its "crash: ..." lines."""
    lines = [ln.strip()[len("crash: "):] for ln in text.splitlines()
             if ln.strip().startswith("crash: ")]
    return "; ".join(lines[-3:])[:400] or None


def probe(build: str, vmlinux: str, vmcore: str, phys: int, timeout: float = 600) -> str:
    """One line: how far ``build`` gets with this dump (for docs/crash.md).

    "reads" means crash started, ``sys`` shows the release, ``ps`` finds
    more than the idle tasks and ``kmem -p`` decodes a struct page.
    """
    try:
        version = crash_version(build)
        out = run(build, vmlinux, vmcore, ["sys", "ps", "kmem -p %x" % phys], timeout=timeout)
    except CrashUnavailable as e:
        return "fails: %s" % e
    release = re.search(r"^\s*RELEASE:\s*(\S+)", out, re.M)
    tasks = len(re.findall(r"^[> ]\s*\d+\s+\d+\s+\d+\s+[0-9a-f]{8,}\s", out, re.M))
    kmem = re.search(r"^[0-9a-f]{8,}\s+%x\s" % phys, out, re.M)
    what = "%s: release %s, %d tasks, kmem -p %s" % (
        version, release.group(1) if release else "?", tasks, "ok" if kmem else "no answer")
    return ("reads  " if release and tasks > 2 and kmem else "partial ") + what


def main(argv: List[str]) -> int:
    if argv[:1] == ["matrix"]:
        here = os.path.dirname(os.path.abspath(__file__))
        sys.path.insert(0, os.path.join(os.path.dirname(here), "vmcores-sample"))
        import lab

        for suite in argv[1:] or lab.SUITES:
            s = lab.sample(suite)
            vmcore = str(s.vmcore_kdump if os.path.exists(str(s.vmcore_kdump)) else s.vmcore_elf)
            for build in ("host", "forky"):
                print("%-9s %-28s %-6s %s" % (suite, s.truth.get("release", "?"), build,
                                              probe(build, str(s.vmlinux), vmcore, 0x2000000)),
                      flush=True)
        return 0
    if argv[:1] == ["build"]:
        print(build_chroot())
        print(crash_version("forky"))
        return 0
    if argv[:1] == ["run"] and len(argv) >= 5:
        sys.stdout.write(run(argv[1], argv[2], argv[3], argv[4:]))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
