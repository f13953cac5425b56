"""``pagewho ARGS`` at the crash prompt (PyKdump program).

PyKdump runs this file each time the user types ``pagewho ...`` once
``register.py`` has registered the name: it looks for ``./pagewho.py``,
then ``$PYKDUMPPATH/pagewho.py`` (shared/PYKDUMP.md).  It executes the file
in the interpreter's ``__main__`` namespace with ``sys.argv = [this file,
ARGS...]`` (its own options already removed) and resets ``sys.path``
afterwards, so the repository root is put back on the path every run.

Everything else lives in modules, which stay imported for the whole crash
session: ``pagewho_pykdump`` (the Target over PyKdump and the per-dump
cache) and the ``pagewho`` core.  See docs/crash.md.
"""

import os
import sys


def _setup_path() -> None:
    here = os.path.dirname(os.path.abspath(globals().get("__file__") or sys.argv[0]))
    root = os.path.dirname(here)
    # Root first: this file is itself named pagewho.py, and the directory it
    # sits in (PyKdump puts it on sys.path) must not shadow the package.
    for path in (here, root):
        while path in sys.path:
            sys.path.remove(path)
    sys.path[0:0] = [root, here]
    stale = sys.modules.get("pagewho")
    if stale is not None and not hasattr(stale, "__path__"):
        del sys.modules["pagewho"]  # this file imported as a module by mistake


if __name__ == "__main__":
    try:
        _setup_path()
        import pagewho_pykdump
    except Exception as _e:  # one line, never a traceback at the crash prompt
        sys.stdout.write("pagewho: cannot load pagewho: %s: %s\n" % (type(_e).__name__, _e))
        sys.stdout.flush()
    else:
        pagewho_pykdump.main(sys.argv[1:])
