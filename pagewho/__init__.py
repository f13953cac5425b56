"""pagewho: who owns this page frame?

The core (everything in this package except the ``*_target`` adapters that
import a debugger module) is pure Python and runs unchanged inside drgn, gdb
and PyKdump's trimmed embedded interpreter.
"""

__version__ = "0.1.0"
