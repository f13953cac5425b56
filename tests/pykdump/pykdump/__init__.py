"""Stand-in for PyKdump's ``pykdump`` package (tests only); see API.py."""
