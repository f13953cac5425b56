"""Register ``pagewho`` as a crash command (run once per crash session).

In ``~/.crashrc``, after ``extend /path/to/mpykdump.so``::

    epython /path/to/pagewho/crashext/register.py

and, in the shell that starts crash, ``export
PYKDUMPPATH=/path/to/pagewho/crashext`` so PyKdump finds ``pagewho.py``
when the command is typed (docs/crash.md).

``crash.register_epython_prog(name, description, synopsis, help)`` takes
four strings and stores them as crash's help data; it returns False (and
crash prints ``"pagewho" is a duplicate of a currently-existing command``)
when the name is taken (PyKdump Extension/functions.c).
"""

import sys

import crash

DESCRIPTION = "who owns a page frame (pfn), and why it is in its state"
SYNOPSIS = "[--json] [--summary] pfn|0xADDR ..."
HELP = """\
  Says who owns each page frame given: buddy allocator (free), slab cache,
  page table, anonymous memory, page cache (file, offset), swap cache,
  hugetlb, large folio / THP, vmalloc, kernel stack, reserved, ... with the
  evidence from struct page.

  The arguments and the answer are the same as the command line
  "pagewho --vmcore VMCORE --vmlinux VMLINUX ARGS" and gdb's "pagewho ARGS".

    pfn        a page frame number, decimal or 0x-hex
    --json     one JSON document instead of text
    --summary  every pfn, grouped by owner
    --help     the full list of options

  EXAMPLE
    crash> pagewho 0x1234
"""


def main() -> bool:
    ok = crash.register_epython_prog("pagewho", DESCRIPTION, SYNOPSIS, HELP)
    if not ok:
        sys.stdout.write("pagewho: not registered: a crash command named \"pagewho\" "
                         "already exists\n")
    sys.stdout.flush()
    return bool(ok)


if __name__ == "__main__":
    main()
