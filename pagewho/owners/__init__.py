"""Namers: one module per owner family, each registering with
:func:`pagewho.owner.register`.  Importing this package registers them all."""

from . import basic  # noqa: F401
