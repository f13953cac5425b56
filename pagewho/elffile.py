"""What a vmlinux file says about itself: its release and build ID.

Used to tell the user which kernel a vmlinux belongs to when it does not
match the dump (the debugger then cannot tell: it reads the dump's memory at
the wrong addresses).  Reads the ELF file directly, a few MiB at most:
the GNU build-ID note and ``linux_banner`` ("Linux version RELEASE ...",
at the start of .rodata in every x86-64 kernel).
"""

from __future__ import annotations

import re
import struct
from typing import Dict, Optional, Tuple

_BANNER = re.compile(rb"Linux version (\d+\.\d+[0-9A-Za-z.+_~-]*) ")
#: how much of .rodata is searched for the banner
_RODATA_SCAN = 8 << 20


def _sections(f) -> Dict[str, Tuple[int, int, int]]:
    """name -> (type, file offset, size) of an ELF64 little-endian file."""
    head = f.read(64)
    if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
        return {}
    shoff, = struct.unpack_from("<Q", head, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", head, 0x3A)
    if not shoff or shentsize < 64 or not 0 < shnum < 1 << 16 or shstrndx >= shnum:
        return {}
    f.seek(shoff)
    table = f.read(shentsize * shnum)
    if len(table) < shentsize * shnum:
        return {}
    raw = []
    for i in range(shnum):
        name, stype, _flags, _addr, off, size = struct.unpack_from("<IIQQQQ", table, i * shentsize)
        raw.append((name, stype, off, size))
    _, _, stroff, strsize = raw[shstrndx]
    f.seek(stroff)
    names = f.read(min(strsize, 1 << 20))
    out = {}
    for name, stype, off, size in raw:
        end = names.find(b"\0", name)
        out[names[name:end if end >= 0 else None].decode("ascii", "replace")] = (stype, off, size)
    return out


def vmlinux_identity(path: str) -> Tuple[Optional[str], Optional[str]]:
    """(release, build ID as hex) of the vmlinux at ``path``; None for what
    cannot be found.  Never raises for a damaged or foreign file."""
    release = build_id = None
    try:
        with open(path, "rb") as f:
            secs = _sections(f)
            for _name, (stype, off, size) in secs.items():
                if stype != 7 or build_id:  # SHT_NOTE
                    continue
                f.seek(off)
                data = f.read(min(size, 1 << 16))
                pos = 0
                while pos + 12 <= len(data):
                    namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
                    name_end = pos + 12 + ((namesz + 3) & ~3)
                    if ntype == 3 and data[pos + 12:pos + 12 + namesz] == b"GNU\0":
                        build_id = data[name_end:name_end + descsz].hex()
                        break
                    pos = name_end + ((descsz + 3) & ~3)
            rodata = secs.get(".rodata")
            if rodata is not None:
                f.seek(rodata[1])
                m = _BANNER.search(f.read(min(rodata[2], _RODATA_SCAN)))
                if m:
                    release = m.group(1).decode("ascii")
    except (OSError, struct.error, ValueError):
        pass
    return release, build_id
