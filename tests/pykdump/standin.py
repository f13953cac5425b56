"""The stand-in crash + PyKdump session that runs pagewho's crash front end.

Real PyKdump cannot be installed here, so this harness plays the parts of
crash and of PyKdump's ``epython`` that matter to pagewho, as documented in
shared/PYKDUMP.md and read from PyKdump's sources (Extension/epython.c,
pykdump/API.py):

- :func:`open_dump` starts a "crash session" on a vmcore + vmlinux (drgn
  underneath; ``pykdump.API`` answers from it);
- :func:`command` is a line typed at the crash prompt: a registered epython
  program (``pagewho ARGS``) is looked up as ``./NAME``, ``./NAME.py``, then
  the same in each ``$PYKDUMPPATH`` directory; ``epython FILE ARGS`` runs a
  file; ``help NAME`` shows a registered command's help;
- :func:`epython` runs a program the way PyKdump does:
  * PyKdump's own options are removed from ``sys.argv`` first
    (API.__epythonOptions / __preprocess);
  * the file is executed in ONE persistent ``__main__`` namespace
    (epython.c ``PyKdump_Run_File``: ``PyRun_FileExFlags`` in the dict of
    ``__main__``), ``__file__`` set for the run; imported modules stay in
    ``sys.modules`` for the whole session;
  * the program's directory is put first on ``sys.path`` and ``sys.path``
    is reset after the run (``Py_SetPath(wstdpath)``);
  * ``SystemExit`` is caught (``-- sys.exit(N) --`` printed for N > 0);
    any other exception prints a traceback (``PyErr_Print``) - recorded in
    ``STATE.tracebacks`` so tests can insist there are none;
  * stdout is crash's output file: text not flushed by the end of the
    command is lost, as in ``crash -i FILE > log`` batch mode.

A new :func:`open_dump` is a new dump in the SAME interpreter: the harness
keeps ``sys.modules`` and the ``__main__`` namespace, which is exactly the
situation in which a badly keyed cache would answer for the wrong dump.
"""

from __future__ import annotations

import builtins
import io
import os
import shlex
import sys
import traceback
from typing import Dict, List, Optional, Set, Tuple

import drgn

HERE = os.path.dirname(os.path.abspath(__file__))

# crash 8/9 built-in command names (help's command list), plus PyKdump's own
CRASH_COMMANDS = (
    "*", "alias", "ascii", "bpf", "bt", "btop", "dev", "dis", "eval", "exit", "extend",
    "files", "foreach", "fuser", "gdb", "help", "ipcs", "irq", "kmem", "list", "log",
    "mach", "mod", "mount", "net", "p", "ps", "pte", "ptob", "ptov", "q", "rd", "repeat",
    "runq", "sbitmap", "search", "set", "sig", "struct", "swap", "sym", "sys", "task",
    "timer", "tree", "union", "vm", "vtop", "waitq", "whatis", "wr", "epython",
)

# API.__epythonOptions: option -> takes a value
PYKDUMP_OPTIONS = {
    "--experimental": False, "--debug": True, "--timeout": True, "--maxel": True,
    "--usens": True, "--reload": False, "--dumpcache": False, "--ofile": True,
    "--ehelp": False,
}


class _State:
    def __init__(self) -> None:
        self.prog: Optional[drgn.Program] = None
        self.vmcore = ""
        self.vmlinux = ""
        self.partial = False
        self.release = ""
        self.commands: Dict[str, Tuple[str, str, str, str]] = {}
        self.aliases: Set[str] = set()
        self.type_cache: Dict[object, object] = {}
        # the interpreter: one __main__ namespace for every run
        self.main_ns: Dict[str, object] = {"__name__": "__main__", "__builtins__": builtins}
        self.used: Set[str] = set()
        self.forbidden: List[str] = []
        self.tracebacks: List[str] = []
        self.lost: List[str] = []
        self.reads = 0


STATE = _State()


def install_path() -> None:
    """Make ``import crash`` / ``import pykdump.API`` find the stand-ins."""
    if HERE not in sys.path:
        sys.path.insert(0, HERE)


def open_dump(vmcore: str, vmlinux: str) -> None:
    """Start a crash session on ``vmcore`` (a new dump, same interpreter)."""
    install_path()
    prog = drgn.Program()
    prog.set_core_dump(vmcore)
    prog.load_debug_info([vmlinux])
    STATE.prog = prog
    STATE.vmcore = os.path.abspath(vmcore)
    STATE.vmlinux = os.path.abspath(vmlinux)
    with open(vmcore, "rb") as f:
        STATE.partial = f.read(8) in (b"KDUMP   ", b"makedump")  # kdump-compressed
    try:
        STATE.release = prog["UTS_RELEASE"].string_().decode()
    except (KeyError, LookupError):
        STATE.release = prog["init_uts_ns"].name.release.string_().decode()
    STATE.type_cache = {}  # PyKdump's type caches belong to one crash session
    STATE.commands = {name: ("builtin", "", "", "") for name in CRASH_COMMANDS}
    STATE.aliases = set()


def strip_pykdump_options(args: List[str]) -> Tuple[List[str], List[str]]:
    """API.__preprocess: split ``args`` into (PyKdump's, the program's)."""
    api: List[str] = []
    user: List[str] = []
    rest = list(args)
    while rest:
        el = rest.pop(0)
        if el.startswith("-"):
            opt = el.split("=")[0]
            if opt in PYKDUMP_OPTIONS:
                api.append(el)
                if "=" not in el and PYKDUMP_OPTIONS[opt] and rest:
                    api.append(rest.pop(0))
                continue
        user.append(el)
    return api, user


class CrashOutput(io.TextIOBase):
    """crash's output file: only flushed text reaches the log."""

    def __init__(self) -> None:
        self.flushed: List[str] = []
        self.pending: List[str] = []

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.pending.append(s)
        return len(s)

    def flush(self) -> None:
        self.flushed.extend(self.pending)
        self.pending = []

    def text(self) -> str:
        return "".join(self.flushed)


def find_program(name: str) -> Optional[str]:
    """Where PyKdump finds NAME: ., then each $PYKDUMPPATH directory."""
    dirs = [os.getcwd()] + [d for d in os.environ.get("PYKDUMPPATH", "").split(":") if d]
    for d in dirs:
        for cand in (name, name + ".py"):
            path = os.path.join(d, cand)
            if os.path.isfile(path):
                return os.path.abspath(path)
    return None


def epython(path: str, args: List[str]) -> str:
    """Run a program file like ``epython PATH ARGS``; return crash's output."""
    _, user = strip_pykdump_options(args)
    saved_argv, saved_path, saved_stdout = sys.argv, list(sys.path), sys.stdout
    out = CrashOutput()
    ns = STATE.main_ns
    set_file = "__file__" not in ns
    sys.argv = [path] + user
    sys.path.insert(0, os.path.dirname(path))  # API.enter_epython
    sys.stdout = out
    try:
        if set_file:
            ns["__file__"] = path
            ns["__cached__"] = None
        with open(path) as f:
            code = compile(f.read(), path, "exec")
        exec(code, ns)
    except SystemExit as e:
        if isinstance(e.code, int) and e.code > 0:
            out.write(" -- sys.exit(%d) --\n" % e.code)
    except BaseException:  # PyErr_Print
        tb = traceback.format_exc()
        STATE.tracebacks.append(tb)
        out.write(tb)
    finally:
        if set_file:
            ns.pop("__file__", None)
            ns.pop("__cached__", None)
        sys.argv, sys.stdout = saved_argv, saved_stdout
        sys.path[:] = saved_path  # Py_SetPath(wstdpath)
    if out.pending:
        STATE.lost.append("".join(out.pending))
    return out.text()


def command(line: str) -> str:
    """A line typed at the crash prompt; return what crash printed."""
    words = shlex.split(line)
    if not words:
        return ""
    name, args = words[0], words[1:]
    if name == "epython":
        if not args:
            return ""
        path = args[0] if os.path.isfile(args[0]) else find_program(args[0])
        if path is None:
            return " Cannot find the program <%s>\n" % args[0]
        return epython(os.path.abspath(path), args[1:])
    if name == "help" and args and STATE.commands.get(args[0], ("",))[0] == "epython":
        _, desc, synopsis, longhelp = STATE.commands[args[0]]
        return "\nNAME\n  %s - %s\n\nSYNOPSIS\n  %s %s\n\nDESCRIPTION\n%s\n" % (
            args[0], desc, args[0], synopsis,
            "\n".join("  " + ln for ln in longhelp.splitlines()))
    entry = STATE.commands.get(name)
    if entry is None:
        return "crash: command not found: %s\n" % name
    if entry[0] != "epython":
        return "crash: the stand-in does not implement %r\n" % name
    path = find_program(name)
    if path is None:
        return " Cannot find the program <%s>\n" % name
    return epython(path, args)


def reset_audit() -> None:
    STATE.used = set()
    STATE.forbidden = []
    STATE.tracebacks = []
    STATE.lost = []
