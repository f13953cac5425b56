"""`pagewho` as a command of drgn's own shell (drgn's plugin entry point).

After ``pip install pagewho``, ``drgn -c VMCORE`` gains a ``pagewho``
command (``%pagewho PFN`` where drgn wants a prefix) taking the same
arguments as the command line.  Loaded by drgn through the
``drgn.plugins`` entry point declared in setup.py.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

try:
    from drgn.commands import argument, raw_command
except ImportError:  # a drgn without the command framework: nothing to add
    raw_command = None

if raw_command is not None:

    @raw_command(
        name="pagewho",
        description="say who owns a page frame",
        arguments=(argument("args", nargs="*", help="as for the pagewho command line; see pagewho --help"),),
    )
    def _cmd_pagewho(prog: Any, name: str, args: str, **kwargs: Any) -> None:
        from .command import run
        from .drgn_target import DrgnTarget

        target = prog.cache.get("pagewho_target")
        if target is None:
            target = DrgnTarget(prog)
            prog.cache["pagewho_target"] = target
        try:
            argv = shlex.split(args)
        except ValueError as e:
            sys.stdout.write("pagewho: %s\n" % e)
            return
        run(target, argv, sys.stdout.write)
