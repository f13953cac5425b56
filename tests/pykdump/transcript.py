"""Print a crash-prompt transcript of pagewho, through the stand-in PyKdump.

    .venv/bin/python tests/pykdump/transcript.py VMCORE VMLINUX 'pagewho 0x1234' ...

Used to make the (clearly labelled) transcript in docs/crash.md: real
PyKdump cannot be installed here, so the prompt is the stand-in's
(tests/pykdump/standin.py), the answers are pagewho's own.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CRASHEXT = os.path.join(os.path.dirname(os.path.dirname(HERE)), "crashext")


def main(argv):
    if len(argv) < 3:
        print(__doc__)
        return 2
    sys.path.insert(0, HERE)
    import standin

    standin.open_dump(argv[0], argv[1])
    os.environ["PYKDUMPPATH"] = CRASHEXT
    lines = ["epython %s" % os.path.join(CRASHEXT, "register.py")] + argv[2:]
    for line in lines:
        sys.stdout.write("crash> %s\n" % line)
        sys.stdout.write(standin.command(line))
    if standin.STATE.tracebacks or standin.STATE.forbidden:
        sys.stderr.write("stand-in audit failed: %r %r\n" % (standin.STATE.tracebacks,
                                                            standin.STATE.forbidden))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
