"""Text that is safe to print and JSON written without the json module.

Kernel memory is untrusted: a task's comm, a dentry name or a slab cache
name may hold escape sequences meant for a terminal.  Everything taken from
kernel memory goes through :func:`clean` before it reaches the user.  The
JSON writer exists because PyKdump's embedded Python has no ``json``.
"""

from __future__ import annotations

from typing import Any, List, Sequence, Union


def clean(raw: Union[bytes, str]) -> str:
    """Printable text of a kernel string: printable ASCII kept, UTF-8 letters
    kept, everything else (control characters, ESC, invalid bytes) shown as
    ``\\xNN``."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    text = raw.decode("utf-8", "backslashreplace")
    out = []
    for ch in text:
        o = ord(ch)
        if o < 0x20 or o == 0x7F or 0x80 <= o < 0xA0:
            out.append("\\x%02x" % o)
        elif o > 0xFFFF or (0xD800 <= o < 0xE000):
            out.append("\\x%02x" % (o & 0xFF))
        else:
            out.append(ch)
    return "".join(out)


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _json_string(s: str) -> str:
    out = ['"']
    for ch in s:
        esc = _ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ord(ch) < 0x20 or ord(ch) >= 0x7F:
            o = ord(ch)
            if o > 0xFFFF:  # a surrogate pair keeps the output pure ASCII
                o -= 0x10000
                out.append("\\u%04x\\u%04x" % (0xD800 + (o >> 10), 0xDC00 + (o & 0x3FF)))
            else:
                out.append("\\u%04x" % o)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def to_json(obj: Any, indent: int = 2, _level: int = 0) -> str:
    """``obj`` as JSON text (pure ASCII): dicts keep their order; bytes are
    cleaned like kernel strings; other objects are written with str()."""
    pad = " " * (indent * (_level + 1)) if indent else ""
    end = " " * (indent * _level) if indent else ""
    nl = "\n" if indent else ""
    sep = ": " if indent else ":"
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, float):
        return repr(obj) if obj == obj and obj not in (float("inf"), float("-inf")) else "null"
    if isinstance(obj, bytes):
        return _json_string(clean(obj))
    if isinstance(obj, str):
        return _json_string(obj)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [
            pad + _json_string(str(key)) + sep + to_json(value, indent, _level + 1)
            for key, value in obj.items()
        ]
        return "{" + nl + ("," + nl).join(items) + nl + end + "}"
    if isinstance(obj, (list, tuple, set, frozenset)):
        seq: Sequence[Any] = sorted(obj) if isinstance(obj, (set, frozenset)) else obj
        if not seq:
            return "[]"
        parts = [pad + to_json(v, indent, _level + 1) for v in seq]
        return "[" + nl + ("," + nl).join(parts) + nl + end + "]"
    return _json_string(str(obj))


def columns(rows: List[List[str]], headers: List[str]) -> str:
    """Rows as aligned text columns: tabulate's "plain" style when tabulate
    imports (not inside PyKdump), the same look by hand otherwise."""
    try:
        from tabulate import tabulate  # type: ignore[import-untyped]
    except Exception:  # ImportError, or a broken install in a trimmed stdlib
        tabulate = None
    if tabulate is not None:
        return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
    # tabulate's "simple" style: a column is at least its header plus two
    # (MIN_PADDING), and lines carry no trailing blanks
    widths = [len(h) + 2 for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)
