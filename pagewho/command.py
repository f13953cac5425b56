"""The `pagewho` command, shared by every front end.

A front end builds a :class:`~pagewho.target.Target` and calls :func:`run`
with the user's arguments and a function that writes text.  Everything the
user sees comes from here, so crash, gdb and the command line answer alike.

STUB: the real argument handling and output land with the core.
"""

from __future__ import annotations

from typing import Callable, List

from .target import Target, TargetError


def run(target: Target, argv: List[str], write: Callable[[str], None]) -> int:
    """Run ``pagewho ARGV`` against ``target``; return an exit status.

    Never raises for a bad argument or unreadable memory: those become one
    line starting with "pagewho: " and a non-zero status.  KeyboardInterrupt
    propagates so the front end can stop cleanly.
    """
    try:
        write("pagewho: %s %s\n" % (target.release(), " ".join(argv)))
        return 0
    except TargetError as e:
        write("pagewho: %s\n" % e)
        return 1
