"""Register ``pagewho`` as a crash command (run once per crash session).

In ``~/.crashrc``, after ``extend /path/to/mpykdump.so``::

    epython /path/to/pagewho/crashext/register.py

and, in the shell that starts crash, ``export
PYKDUMPPATH=/path/to/pagewho/crashext`` so PyKdump finds ``pagewho.py``
when the command is typed (docs/crash.md).

``crash.register_epython_prog(name, description, synopsis, help)`` takes
four strings and stores them as crash's help data (``help pagewho``); it
returns False, after crash printed ``"pagewho" is a duplicate of a
currently-existing command``, when the name is taken (PyKdump
Extension/functions.c).  The synopsis and help come from the shared
command's own argument parser, so ``help pagewho`` always matches it.
"""

import os
import sys

import crash

FALLBACK_DESCRIPTION = "who owns a page frame (pfn), and why it is in its state"
FALLBACK_SYNOPSIS = "[-j|--json] [-l] [-s|--summary] [-p PHYS] [-a VADDR] [--page ADDR] PFN ..."
FALLBACK_HELP = "  pagewho --help lists the options.\n"


def help_data():
    """(description, synopsis, help) from pagewho.command's parser."""
    here = os.path.dirname(os.path.abspath(globals().get("__file__") or sys.argv[0]))
    root = os.path.dirname(here)
    if root not in sys.path:
        sys.path.insert(0, root)  # PyKdump resets sys.path after this run
    try:
        from pagewho import command

        parser = command.make_parser(lambda text: None)
        usage = " ".join(parser.format_usage().split())
        synopsis = usage[len("usage: pagewho"):].strip()
        text = parser.format_help()
        # drop the usage and description paragraphs: crash shows them already
        body = "\n\n".join(text.split("\n\n")[2:]) or text
        longhelp = "\n".join("  " + ln if ln else "" for ln in body.splitlines()) + "\n"
        return command.DESCRIPTION, synopsis, longhelp
    except Exception:  # the help text must never stop the registration
        return FALLBACK_DESCRIPTION, FALLBACK_SYNOPSIS, FALLBACK_HELP


def main() -> bool:
    description, synopsis, longhelp = help_data()
    ok = crash.register_epython_prog("pagewho", description, synopsis, longhelp)
    if not ok:
        sys.stdout.write("pagewho: not registered: a crash command named \"pagewho\" "
                         "already exists\n")
    sys.stdout.flush()
    return bool(ok)


if __name__ == "__main__":
    main()
