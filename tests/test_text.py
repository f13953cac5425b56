"""Output helpers: the plain-column fallback looks exactly like tabulate,
so crash and gdb (no tabulate) print what the command line prints."""

from __future__ import annotations

import builtins

import pytest

from pagewho import text

TABLES = [
    (["PFN", "KIND", "OWNER"], [["0x1", "buddy", "free x"], ["0x100", "slab", "slab: cache dentry"]]),
    (["A", "LONGER HEADER"], [["x", "y"], ["a much longer cell", ""]]),
    (["PAGES", "MiB", "OWNER"], [["262144", "1024.0", "everything"]]),
]


@pytest.mark.parametrize("headers,rows", TABLES)
def test_plain_columns_match_tabulate_simple(headers, rows, monkeypatch):
    pytest.importorskip("tabulate")
    with_tabulate = text.columns(rows, headers)
    real_import = builtins.__import__

    def no_tabulate(name, *args, **kwargs):
        if name == "tabulate":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tabulate)
    assert text.columns(rows, headers) == with_tabulate


def test_clean_escapes_terminal_controls():
    assert text.clean(b"ok\x1b[31mred\x07") == "ok\\x1b[31mred\\x07"
    assert text.clean("tab\there") == "tab\\x09here"
