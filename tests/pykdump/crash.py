"""Stand-in for PyKdump's C module ``crash`` (Extension/functions.c).

Only what pagewho's crash front end touches is here, with PyKdump's
signatures and conventions (../../../shared/PYKDUMP.md):

- ``error``: the exception PyKdump raises for crash/GDB failures
  (``crashError`` in functions.c), e.g. a failed ``readmem``;
- ``register_epython_prog(name, description, shorthelp, longhelp)``: four
  strings; True when registered; False, after printing ``"NAME" is a
  duplicate of a currently-existing command``, when a crash command of that
  name exists; an alias of the same name is deleted first.

Attribute access is guarded like ``pykdump.API``: a name outside
``ALLOWED`` is recorded in :data:`standin.STATE` and raises AttributeError,
so a test sees the adapter reaching for something undocumented.  Names
starting with ``_`` belong to the harness, not to PyKdump.
"""

from __future__ import annotations

import sys
import types


class error(Exception):  # noqa: N801 - PyKdump's name
    """``crash.error``: a crash/GDB failure (functions.c ``crashError``)."""


def register_epython_prog(name: str, description: str, shorthelp: str, longhelp: str) -> bool:
    """functions.c ``py_register_epython_prog``: help_data = the 4 strings."""
    import standin

    for s in (name, description, shorthelp, longhelp):
        if not isinstance(s, str):
            raise error("invalid parameter(s) type")
    st = standin.STATE
    if name in st.commands:
        # error(INFO, "%s: \"%s\" is a duplicate ...", pc->curext->filename, cmd)
        sys.stdout.write('%s: "%s" is a duplicate of a currently-existing command\n'
                         % ("mpykdump.so", name))
        sys.stdout.flush()
        return False
    if name in st.aliases:
        sys.stdout.write('alias "%s" deleted: name clash with extension command\n' % name)
        st.aliases.discard(name)
    st.commands[name] = ("epython", description, shorthelp, longhelp)
    return True


ALLOWED = frozenset({"error", "register_epython_prog"})


class _Guarded(types.ModuleType):
    def __getattribute__(self, name: str):
        if name.startswith("_") or name in ("ALLOWED",):
            return super().__getattribute__(name)
        import standin

        if name not in super().__getattribute__("ALLOWED"):
            standin.STATE.forbidden.append("crash." + name)
            raise AttributeError("stand-in crash module has no %r (not in the documented set)" % name)
        standin.STATE.used.add("crash." + name)
        return super().__getattribute__(name)


sys.modules[__name__].__class__ = _Guarded
