"""Namers: one module per owner family, each registering with
:func:`pagewho.owner.register`.  Importing this package registers them all."""

from . import anon, basic, file, pgtable, swap  # noqa: F401
