"""The `pagewho` command line: scripted postmortems over drgn.

    pagewho --vmcore VMCORE --vmlinux VMLINUX PFN...
    pagewho --vmcore VMCORE --vmlinux VMLINUX --summary --json
    pagewho PFN...                      # the running kernel, via /proc/kcore (root)

Everything after the dump options is the shared command (pagewho.command).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from .command import make_parser, run
from .target import TargetError
from .text import clean


def _split_args(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--vmcore", "-c")
    p.add_argument("--vmlinux", "-k")
    ns, rest = p.parse_known_args(argv)
    ns.rest = rest
    return ns


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``pagewho`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    ns = _split_args(argv)

    def write(text: str) -> None:
        sys.stdout.write(text)

    if any(a in ("-h", "--help") for a in ns.rest) or not ns.rest:
        parser = make_parser(write)
        parser.usage = "pagewho [--vmcore VMCORE] [--vmlinux VMLINUX] [options] PFN..."
        dump = parser.add_argument_group("the memory image")
        dump.add_argument("-c", "--vmcore", help="the dump (ELF or kdump-compressed); "
                          "default: the running kernel through /proc/kcore (root)")
        dump.add_argument("-k", "--vmlinux", help="the vmlinux with debug info matching the dump; "
                          "default: drgn's search (/usr/lib/debug/...)")
        parser.print_help()
        return 0 if ns.rest else 2
    if ns.vmcore and not os.path.exists(ns.vmcore):
        sys.stderr.write("pagewho: %s: no such file\n" % ns.vmcore)
        return 2
    if ns.vmlinux and not os.path.exists(ns.vmlinux):
        sys.stderr.write("pagewho: %s: no such file\n" % ns.vmlinux)
        return 2
    # drgn logs through the "drgn" logger; its warnings (an ignored vmlinux,
    # unreadable module lists) would add lines to pagewho's one-line errors.
    logging.getLogger("drgn").setLevel(logging.ERROR)
    try:
        from .drgn_target import DrgnTarget
    except ImportError:
        sys.stderr.write("pagewho: drgn is not installed (pip install drgn)\n")
        return 2
    try:
        # Ctrl-C while drgn loads the debug info (seconds) is an interrupt too
        target = DrgnTarget.open(ns.vmcore, ns.vmlinux)
        return run(target, ns.rest, write)
    except TargetError as e:
        sys.stderr.write("pagewho: %s\n" % clean(str(e)))
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("pagewho: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
