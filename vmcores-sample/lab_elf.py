"""Small readers/rewriters for the two dump formats the lab produces.

- QEMU 7.2 writes ELF dumps with a section header at offset 64 and the program
  headers after it; makedumpfile 1.7.2 ignores e_phoff and expects the program
  headers at offset 64.  `phdrs_at_64` writes a copy that makedumpfile reads.
- `kdump_dumped_pfns` reads the "dumpable" bitmap of a kdump-compressed file,
  so the lab can say which pages a filtered dump still contains.
"""

import shutil
import struct
from pathlib import Path

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr
PHDR_SIZE = 56
PN_XNUM = 0xFFFF


def phdrs_at_64(src: Path, dst: Path) -> None:
    """Copy src to dst with the program headers moved to offset 64.

    The program headers move 64 bytes down over QEMU's lone section header
    (which only carries e_phnum overflow, unused below 65535 segments); no
    segment data moves, so p_offset values stay valid.
    """
    with open(src, "rb") as f:
        eh = list(EHDR.unpack(f.read(EHDR.size)))
        ident, phoff, phentsize, phnum = eh[0], eh[5], eh[9], eh[10]
        if ident[:4] != b"\x7fELF" or ident[4] != 2:
            raise ValueError(f"{src}: not an ELF64 file")
        if phnum == PN_XNUM:
            raise ValueError(f"{src}: more than 65534 program headers, not supported")
        f.seek(phoff)
        phdrs = f.read(phentsize * phnum)
    if phoff == 64:
        shutil.copyfile(src, dst)
        return
    first_data = min(struct.unpack_from("<Q", phdrs, i * phentsize + 8)[0] for i in range(phnum))
    if 64 + len(phdrs) > first_data:
        raise ValueError(f"{src}: no room for program headers at 64")
    shutil.copyfile(src, dst)
    eh[5] = 64  # e_phoff
    eh[6] = 0  # e_shoff
    eh[12] = 0  # e_shnum
    eh[13] = 0  # e_shstrndx
    with open(dst, "r+b") as f:
        f.write(EHDR.pack(*eh))
        f.seek(64)
        f.write(phdrs)
        # zero what was left of the old program headers; nothing points there now
        f.write(b"\0" * max(0, phoff + len(phdrs) - (64 + len(phdrs))))


def kdump_dumped_pfns(path: Path) -> tuple[int, bytes]:
    """(max_mapnr, 2nd bitmap) of a kdump-compressed file: bit pfn set = page dumped.

    Layout from makedumpfile's diskdump_mod.h: disk_dump_header in block 0,
    kdump_sub_header from block 1, then the 1st and 2nd bitmaps, each
    bitmap_blocks/2 blocks.
    """
    with open(path, "rb") as f:
        hdr = f.read(4096)
        if hdr[:8] != b"KDUMP   ":
            raise ValueError(f"{path}: not a kdump-compressed file")
        # signature[8], header_version, utsname (6 x 65), timestamp (2 x 8, aligned to 8)
        status, block_size, sub_hdr_size, bitmap_blocks, max_mapnr = struct.unpack_from(
            "<IiiII", hdr, 424)
        header_version = struct.unpack_from("<i", hdr, 8)[0]
        if header_version >= 6:
            f.seek(block_size)
            sub = f.read(block_size)
            # kdump_sub_header: phys_base, dump_level, split, start_pfn, end_pfn,
            # offset_vmcoreinfo, size_vmcoreinfo, offset_note, size_note,
            # offset_eraseinfo, size_eraseinfo, start_pfn_64, end_pfn_64, max_mapnr_64
            max_mapnr = struct.unpack_from("<Q", sub, 8 + 4 + 4 + 8 + 8 + 8 * 6 + 8 + 8)[0]
        half = bitmap_blocks // 2 * block_size
        f.seek(block_size * (1 + sub_hdr_size) + half)
        return max_mapnr, f.read(half)


def bit(bitmap: bytes, pfn: int) -> bool:
    i = pfn >> 3
    return i < len(bitmap) and bool(bitmap[i] >> (pfn & 7) & 1)
