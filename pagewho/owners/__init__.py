"""Namers: one module per owner family, each registering with
:func:`pagewho.owner.register`.  Importing this package registers them all."""

from . import anon, basic, buddy, file, hugetlb, misc, pgtable, reserved, slab, swap, vmalloc  # noqa: F401
