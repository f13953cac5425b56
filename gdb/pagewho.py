"""pagewho inside gdb: who owns this page frame?

    (gdb) source /path/to/pagewho/gdb/pagewho.py
    (gdb) pagewho 0x12345
    (gdb) print $pagewho_owner(0x12345)

Works on a live kernel behind QEMU's gdbstub (``target remote``) and on ELF
vmcores that gdb can read (``gdb vmlinux vmcore.elf``).  Everything the user
sees comes from the shared core (``pagewho.command.run``); this file only
adapts gdb's Python API to the :class:`pagewho.target.Target` protocol.
See docs/gdb.md.

gdb API used (gdb manual, "Extending GDB" > "Python API"):
``Inferior.read_memory`` (Inferiors In Python), ``gdb.lookup_type`` and
``Type.fields`` (Types In Python), ``lookup_global_symbol`` /
``lookup_static_symbol`` (Symbols In Python), ``gdb.Command`` (Commands In
Python), ``gdb.Function`` (Functions In Python), ``gdb.events`` (Events In
Python).  pagewho never writes to the inferior: there is no write path here.
"""

from __future__ import annotations

import bisect
import inspect
import os
import re
import struct
import sys
import traceback
from collections import OrderedDict

import gdb  # provided by gdb's embedded Python

# The core is plain Python in the repository root, next to this directory.
# gdb's Python is the system one, not the project's virtualenv.  This file's
# path comes from its code object: gdb's "source" run from inside another
# script (an auto-loaded vmlinux-gdb.py) leaves __file__ naming the outer one.
_REPO = os.path.dirname(os.path.dirname(os.path.realpath(inspect.currentframe().f_code.co_filename)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from pagewho import command  # noqa: E402 -- needs the sys.path line above
from pagewho.target import FaultError, Target, TargetError  # noqa: E402
from pagewho.text import clean  # noqa: E402

PAGE = 4096
#: reads this large bypass the page cache (struct page arrays, summaries)
BULK = 64 * 1024
#: pages kept by the read cache (16 MiB)
CACHE_PAGES = 4096

#: x86-64 kernel image window (__START_KERNEL_map, KERNEL_IMAGE_SIZE with
#: KASLR) and the alignment of the KASLR slide (CONFIG_PHYSICAL_ALIGN;
#: 2 MiB on Debian, and the smallest value x86-64 allows).
KERNEL_MAP = 0xFFFFFFFF80000000
KERNEL_MAP_END = 0xFFFFFFFFC0000000
KASLR_ALIGN = 0x200000

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.$]*$")
_MEMBER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


class ConnectionLost(BaseException):
    """The gdbstub went away: the whole run must stop.

    Not a TargetError, which the core reports per pfn and goes on (every
    further read would fail the same way), and not an Exception, which the
    core reports as an internal error: like asyncio.CancelledError (Python
    3.8+), it derives from BaseException so only _guarded catches it."""


class PageWalk:
    """Kernel virtual memory through the kernel's own page tables, for a
    vCPU stopped in user mode under page-table isolation (PTI).

    QEMU's gdbstub reads memory through the stopped vCPU's page tables, and
    PTI's user copy maps next to nothing of the kernel.  The kernel's copy is
    the page just below (arch/x86/mm/pti.c: PTI_PGTABLE_SWITCH_BIT, 12), so
    pagewho walks that one itself, reading page tables and data by physical
    address in QEMU's "Qqemu.PhyMemMode" (QEMU docs, gdbstub; since 4.1),
    switched on for each read and off again at once.  Nothing is written to
    the guest, and the vCPU's registers are left as they are.
    """

    PTI_USER_BIT = 1 << 12
    ADDR = 0x000FFFFFFFFFF000  # physical address bits of a page-table entry

    def __init__(self, inferior: gdb.Inferior, pgd: int, levels: int) -> None:
        self.inferior, self.pgd, self.levels = inferior, pgd, levels
        self._pages: dict[int, int] = {}  # virtual page -> physical page

    @classmethod
    def needed(cls, inferior: gdb.Inferior) -> PageWalk | None:
        """A PageWalk when the selected vCPU is in user mode (CS.RPL 3) on
        PTI's user page tables; None otherwise (gdb reads as it is)."""
        try:
            frame = gdb.selected_frame()
            cs, cr3 = int(frame.read_register("cs")), int(frame.read_register("cr3"))
            cr4 = int(frame.read_register("cr4"))
        except (gdb.error, ValueError):
            return None  # no registers to tell (not QEMU, not x86-64)
        if cs & 3 != 3 or not cr3 & cls.PTI_USER_BIT:
            return None
        user = cr3 & cls.ADDR
        walk = cls(inferior, user & ~cls.PTI_USER_BIT, 5 if cr4 & 1 << 12 else 4)  # CR4.LA57
        try:
            if not walk._mode(True):
                return None  # not QEMU's gdbstub: gdb's reads are all there is
            try:
                pair = walk._is_pti_pair(user)
            finally:
                walk._mode(False)
        except gdb.error:
            return None
        return walk if pair else None

    def _is_pti_pair(self, user: int) -> bool:
        """Is the page below the user PGD its PTI kernel twin?  PTI writes
        every user-half entry into both, setting NX in the kernel's copy
        (pti_set_user_pgtbl), and only the kernel's copy maps most of the
        kernel half.  A kernel without PTI may put its single PGD on an odd
        page; the page below it is then unrelated."""
        nx = 1 << 63

        def entries(address: int) -> list[int]:
            raw = self.inferior.read_memory(address, PAGE).tobytes()
            return [int.from_bytes(raw[i:i + 8], "little") for i in range(0, PAGE, 8)]

        kernel, mine = entries(self.pgd), entries(user)
        same_user_half = all(k & ~nx == u & ~nx for k, u in zip(kernel[:256], mine[:256]))
        present = [sum(e & 1 for e in t[256:]) for t in (kernel, mine)]
        return same_user_half and any(mine[:256]) and present[0] > present[1]

    def forget(self) -> None:
        self._pages.clear()

    def _mode(self, physical: bool) -> bool:
        reply = gdb.execute(f"maint packet Qqemu.PhyMemMode:{int(physical)}", to_string=True)
        return '"OK"' in reply

    def read(self, address: int, size: int) -> bytes:
        self._mode(True)
        try:
            out = []
            while size > 0:
                n = min(size, PAGE - (address & (PAGE - 1)))
                out.append(self.inferior.read_memory(self._physical(address), n).tobytes())
                address, size = address + n, size - n
            return b"".join(out)
        finally:
            self._mode(False)

    def _physical(self, address: int) -> int:
        page = address & ~(PAGE - 1)
        if page not in self._pages:
            self._pages[page] = self._translate(page)
        return self._pages[page] | (address & (PAGE - 1))

    def _translate(self, address: int) -> int:
        """The x86-64 4- or 5-level walk (Intel SDM vol. 3, 4.5)."""
        table = self.pgd
        for level in range(self.levels, 0, -1):
            shift = 12 + 9 * (level - 1)
            raw = self.inferior.read_memory(table + ((address >> shift) & 0x1FF) * 8, 8).tobytes()
            entry = int.from_bytes(raw, "little")
            if not entry & 1:  # not present
                raise gdb.MemoryError(f"Cannot access memory at address {address:#x}")
            if level in (2, 3) and entry & 0x80:  # PS: a 2 MiB or 1 GiB page
                return (entry & self.ADDR & ~((1 << shift) - 1)) | (address & ((1 << shift) - 1))
            table = entry & self.ADDR
        return table


class GdbTarget(Target):
    """A :class:`Target` over gdb's selected inferior and loaded symbols."""

    name = "gdb"

    def __init__(self, slide_hint: int | None = None) -> None:
        self.inferior = gdb.selected_inferior()
        self.key = _key()
        self._slide_hint = slide_hint
        conn = getattr(self.inferior, "connection", None)
        # "remote"/"extended-remote" is a gdbstub: the memory is live
        kind = getattr(conn, "type", None)
        if kind is None:
            # only a vmlinux: gdb would answer reads from the file's sections
            raise TargetError(
                "no kernel memory: connect to the kernel (target remote HOST:PORT) or open "
                "an ELF vmcore (core-file FILE); gdb cannot read kdump-compressed dumps: "
                "use pagewho --vmcore FILE --vmlinux VMLINUX, or crash")
        self.live = kind in ("remote", "extended-remote")
        #: for a core: the vaddr ranges it holds; None when reads go to a live target
        self.core_ranges = None if self.live else _core_ranges()
        #: the kernel's own page tables, when the stopped vCPU's do not map
        #: the kernel (user mode under PTI); see _raw_by_walk
        self.walk: PageWalk | None = PageWalk.needed(self.inferior) if self.live else None
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._types: dict[str, gdb.Type | None] = {}
        self._slide: int | None = None

    # -- memory -----------------------------------------------------------

    def forget_memory(self) -> None:
        """Drop cached memory (the guest ran, or a new command starts)."""
        self._cache.clear()
        if self.walk is not None:
            self.walk.forget()

    def _raw(self, address: int, size: int) -> bytes:
        if self.core_ranges is not None and not _inside(self.core_ranges, address, size):
            # gdb would fall back to the vmlinux file's own bytes: stale data
            raise FaultError(address, size, "not in the dump")
        try:
            if self.walk is not None:
                return self.walk.read(address, size)
            return self.inferior.read_memory(address, size).tobytes()
        except (gdb.error, OverflowError, ValueError) as e:  # gdb.MemoryError included
            if self.live and getattr(self.inferior, "connection", None) is None:
                raise ConnectionLost(f"the gdbstub connection closed ({e})") from None
            raise FaultError(address, size, str(e)) from None

    def read(self, address: int, size: int) -> bytes:
        if size <= 0:
            return b""
        if address < 0 or address + size > 1 << 64:
            raise FaultError(address, size, "address out of range")
        if size >= BULK:
            return self._raw(address, size)
        first = address & ~(PAGE - 1)
        last = (address + size - 1) & ~(PAGE - 1)
        pages = range(first, last + PAGE, PAGE)
        missing = [p for p in pages if p not in self._cache]
        try:
            if missing:
                self._fill(missing)
            blob = b"".join(self._page(p) for p in pages)
        except FaultError as e:  # name the bytes asked for, not the page around them
            raise FaultError(address, size, e.why) from None
        start = address - first
        return blob[start:start + size]

    def _fill(self, missing: list[int]) -> None:
        """Read runs of adjacent missing pages with one request each; if a
        run faults, read it page by page so a good page is still cached."""
        runs: list[tuple[int, int]] = []
        for p in missing:
            if runs and runs[-1][0] + runs[-1][1] * PAGE == p:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((p, 1))
        for start, count in runs:
            try:
                data = self._raw(start, count * PAGE)
            except FaultError:
                if count == 1:
                    raise
                for i in range(count):
                    self._store(start + i * PAGE, self._raw(start + i * PAGE, PAGE))
                continue
            for i in range(count):
                self._store(start + i * PAGE, data[i * PAGE:(i + 1) * PAGE])

    def _store(self, page: int, data: bytes) -> None:
        self._cache[page] = data
        if len(self._cache) > CACHE_PAGES:
            self._cache.popitem(last=False)

    def _page(self, page: int) -> bytes:
        data = self._cache.get(page)
        if data is None:  # evicted while assembling a large read
            data = self._raw(page, PAGE)
        return data

    # -- types ------------------------------------------------------------

    def _type(self, type_name: str) -> gdb.Type | None:
        if type_name not in self._types:
            try:
                t: gdb.Type | None = gdb.lookup_type(type_name).strip_typedefs()
            except gdb.error:
                t = None
            self._types[type_name] = t
        return self._types[type_name]

    def sizeof(self, type_name: str) -> int | None:
        t = self._type(type_name)
        if t is None or t.code == gdb.TYPE_CODE_VOID:
            return None
        try:
            return t.sizeof
        except gdb.error:  # incomplete type
            return None

    def _member(self, type_name: str, member: str) -> tuple[int, gdb.Type] | None:
        """(byte offset, type) of a dotted member, through anonymous
        unions/structs and "[n]" subscripts, like C and drgn.offsetof."""
        t = self._type(type_name)
        if t is None:
            return None
        offset = 0
        for part in member.split("."):
            m = _MEMBER.fullmatch(part)
            if m is None or t.code not in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION):
                return None
            found = _find_field(t, m.group(1))
            if found is None:
                return None
            bits, t = found
            if bits % 8:
                return None  # a bit-field has no byte offset
            offset += bits // 8
            for index in re.findall(r"\[(\d+)\]", m.group(2)):
                if t.code != gdb.TYPE_CODE_ARRAY:
                    return None
                t = t.target().strip_typedefs()
                offset += int(index) * t.sizeof
        return offset, t

    def offsetof(self, type_name: str, member: str) -> int | None:
        found = self._member(type_name, member)
        return None if found is None else found[0]

    def member_size(self, type_name: str, member: str) -> int | None:
        if "[" in member:  # dotted names only, as the protocol (and drgn_target) say
            return None
        found = self._member(type_name, member)
        return None if found is None else found[1].sizeof

    def enumerators(self, enum_name: str) -> dict[str, int] | None:
        t = self._type(enum_name)
        if t is None or t.code != gdb.TYPE_CODE_ENUM:
            return None
        # Type.fields() of an enum: one Field per enumerator, value in enumval
        return {f.name: int(f.enumval) for f in t.fields()}

    def enum_value(self, name: str) -> int | None:
        if not _NAME.match(name):
            return None
        for lookup in (gdb.lookup_static_symbol, gdb.lookup_global_symbol):
            try:
                sym = lookup(name, gdb.SYMBOL_VAR_DOMAIN)
            except gdb.error:
                sym = None
            if sym is not None and sym.addr_class == gdb.SYMBOL_LOC_CONST:
                return int(sym.value())
        return None

    # -- symbols and KASLR ------------------------------------------------

    def _link_address(self, name: str) -> int | None:
        """The address gdb's symbol tables give ``name`` (not KASLR-adjusted)."""
        if not _NAME.match(name):
            return None
        for lookup in (gdb.lookup_global_symbol, gdb.lookup_static_symbol):
            try:
                sym = lookup(name)
            except gdb.error:
                continue
            if sym is not None and sym.addr_class in (gdb.SYMBOL_LOC_STATIC, gdb.SYMBOL_LOC_BLOCK):
                try:
                    return int(sym.value().address)
                except (gdb.error, TypeError):
                    pass
        # minimal (ELF) symbols without debug info, e.g. _text, __per_cpu_start
        try:
            return int(gdb.parse_and_eval(f"(unsigned long)&'{name}'"))
        except gdb.error:
            return None

    def slide(self) -> int:
        """What to add to gdb's symbol addresses to get the running kernel's.

        0 when gdb's symbols match the kernel (no KASLR, or the user already
        relocated them with ``symbol-file -o``).  Found by looking for the
        kernel's ``linux_banner`` at every KASLR-aligned place of the kernel
        image window: an unmapped place fails fast, and only the real one
        holds "Linux version".
        """
        if self._slide is not None:
            return self._slide
        banner = self._link_address("linux_banner")
        if banner is None:
            raise TargetError("no kernel symbols: load the vmlinux that matches the kernel "
                              "(file /path/to/vmlinux)")
        self._slide = self._find_slide(banner)
        self.forget_memory()
        try:
            self._check_build_id(banner)
        except TargetError:
            self._slide = None
            raise
        return self._slide

    def _find_slide(self, banner: int) -> int:
        for slide in (0, self._slide_hint):
            if slide is not None and self._is_banner(banner + slide):
                return slide
        lo = KERNEL_MAP + (banner - KERNEL_MAP) % KASLR_ALIGN
        for address in range(lo, KERNEL_MAP_END, KASLR_ALIGN):
            if address != banner and self._is_banner(address):
                return address - banner
        raise TargetError(_no_kernel_message(self, banner))

    def _check_build_id(self, banner: int) -> None:
        """Refuse a vmlinux whose GNU build-id is not the kernel's own
        (VMCOREINFO BUILD-ID, 5.9+): a banner in the right place is not proof
        enough, and a wrong vmlinux gives plausible nonsense."""
        m = re.search(r"^BUILD-ID=([0-9a-f]+)$", self.vmcoreinfo() or "", re.MULTILINE)
        sym = gdb.lookup_global_symbol("linux_banner")
        objfile = sym.symtab.objfile if sym is not None and sym.symtab is not None else None
        mine = getattr(objfile, "build_id", None)
        if m is None or mine is None or m.group(1) == mine:
            return
        kernel = self.read_cstring(banner + self.slide(), 200).decode("ascii", "replace")
        raise TargetError(f"the vmlinux does not match the kernel: {_version(_vmlinux_banner(banner))} "
                          f"(build-id {mine[:12]}) is loaded, {_version(kernel)} (build-id "
                          f"{m.group(1)[:12]}) is running")

    def _is_banner(self, address: int) -> bool:
        try:
            return self._raw(address, 14) == b"Linux version "
        except FaultError:
            return False

    def symbol(self, name: str) -> int | None:
        address = self._link_address(name)
        if address is None:
            return None
        if KERNEL_MAP <= address < KERNEL_MAP_END:  # not per-cpu offsets or absolutes
            address += self.slide()
        return address

    def symbolize(self, address: int) -> str | None:
        try:
            address -= self.slide()
            # "info symbol" uses the minimal (ELF) symbols, as drgn does
            text = gdb.execute(f"info symbol {address:#x}", to_string=True)
        except (gdb.error, TargetError):
            return None
        m = re.match(r"(\S+)(?: \+ (\d+))? in section", text)
        if m is None:
            return None
        return f"{m.group(1)}+{int(m.group(2) or 0):#x}"

    # -- kernel facts -----------------------------------------------------

    def vmcoreinfo(self) -> str | None:
        data, size = self.symbol("vmcoreinfo_data"), self.symbol("vmcoreinfo_size")
        if data is None or size is None:
            return None
        try:
            n = self.read_u64(size)
            if not 0 < n <= 1 << 20:
                return None
            return self.read(self.read_u64(data), n).decode("ascii", "replace")
        except FaultError:
            return None

    def release(self) -> str:
        uts = self.symbol("init_uts_ns")
        off = self.offsetof("struct uts_namespace", "name.release")
        if uts is None or off is None:
            raise TargetError("no init_uts_ns in the symbols: is this a Linux vmlinux?")
        return self.read_cstring(uts + off, 65).decode("ascii", "replace")

    def kaslr_offset(self) -> int:
        """The kernel's KASLR offset from its link address (VMCOREINFO
        KERNELOFFSET), or gdb's slide when VMCOREINFO does not say."""
        info = self.vmcoreinfo() or ""
        m = re.search(r"^KERNELOFFSET=([0-9a-fA-F]+)$", info, re.MULTILINE)
        return int(m.group(1), 16) if m else self.slide()


def _find_field(t: gdb.Type, name: str) -> tuple[int, gdb.Type] | None:
    """(bit position, type) of ``name`` in ``t`` or its anonymous members."""
    for f in t.fields():
        if f.name == name:
            return f.bitpos, f.type.strip_typedefs()
        if not f.name and not f.is_base_class:
            inner = f.type.strip_typedefs()
            if inner.code in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION):
                found = _find_field(inner, name)
                if found is not None:
                    return f.bitpos + found[0], found[1]
    return None


def _core_ranges() -> list[tuple[int, int]]:
    """The [start, end) virtual address ranges of the core file's PT_LOAD
    segments, merged, as "info files" lists them ("0x... - 0x... is load3")."""
    text = gdb.execute("info files", to_string=True)
    core = text.split("core dump file", 1)[-1].split("Local exec file", 1)[0]
    found = sorted((int(a, 16), int(b, 16)) for a, b in
                   re.findall(r"(0x[0-9a-f]+) - (0x[0-9a-f]+) is load", core))
    merged: list[tuple[int, int]] = []
    for a, b in found:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def _inside(ranges: list[tuple[int, int]], address: int, size: int) -> bool:
    i = bisect.bisect_right(ranges, (address, 1 << 64)) - 1
    return i >= 0 and ranges[i][0] <= address and address + size <= ranges[i][1]


def _vmlinux_banner(address: int) -> str:
    """linux_banner as the vmlinux file itself holds it, read through its ELF
    section headers (gdb would read the target instead), or ""."""
    sym = gdb.lookup_global_symbol("linux_banner")
    path = sym.symtab.objfile.filename if sym is not None and sym.symtab is not None else None
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            ehdr = f.read(64)
            if ehdr[:4] != b"\x7fELF" or ehdr[4] != 2:  # ELFCLASS64
                return ""
            (shoff,) = struct.unpack_from("<Q", ehdr, 0x28)
            shentsize, shnum = struct.unpack_from("<HH", ehdr, 0x3A)
            f.seek(shoff)
            table = f.read(shentsize * shnum)
            for i in range(shnum):
                # Elf64_Shdr: sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size
                _, kind, _, addr, offset, size = struct.unpack_from("<IIQQQQ", table, i * shentsize)
                if kind != 8 and addr <= address < addr + size:  # 8: SHT_NOBITS
                    f.seek(offset + address - addr)
                    return f.read(200).split(b"\0")[0].decode("ascii", "replace")
    except (OSError, struct.error):
        pass
    return ""


def _version(banner: str) -> str:
    """ "Linux version 6.1.0-56-cloud-amd64 (...) ..." -> "Linux 6.1.0-56-cloud-amd64". """
    words = banner.split()
    return f"Linux {words[2]}" if len(words) > 2 and words[1] == "version" else "an unknown kernel"


def _no_kernel_message(target: GdbTarget, banner: int) -> str:
    ranges = target.core_ranges
    if ranges is not None and not any(b > KERNEL_MAP for _, b in ranges):
        return ("this core has physical addresses only (QEMU dump-guest-memory without -p), "
                "so gdb cannot read kernel virtual memory from it: dump with "
                "'dump-guest-memory -p', or use pagewho --vmcore FILE --vmlinux VMLINUX")
    return (f"the kernel of this vmlinux ({_version(_vmlinux_banner(banner))}) is not in memory "
            "at any KASLR offset: the vmlinux does not match the running kernel, or the guest is "
            "stopped where kernel memory is not mapped")


# -- gdb glue ------------------------------------------------------------

_target: GdbTarget | None = None
_ran = False  # the inferior ran since _target was made
_last_slide: int | None = None  # a hint: the guest usually keeps its KASLR slide


def _key() -> tuple[int, int | None, int | None]:
    """What a target is good for: an inferior, its connection, and the vCPU
    (gdb thread) whose page tables the gdbstub reads through."""
    inf, thread = gdb.selected_inferior(), gdb.selected_thread()
    return inf.num, inf.connection_num, None if thread is None else thread.num


def target() -> GdbTarget:
    """The target for the selected inferior and connection, made on first use.

    A live guest that ran since gets a new one: the core keeps what it
    learned of the kernel on the target, and that may be stale now.
    """
    global _target, _ran, _last_slide
    if _target is not None and _target.key == _key() and not _ran:
        if _target.live:
            _target.forget_memory()
        return _target
    fresh = GdbTarget(slide_hint=_last_slide)
    slide = fresh.slide()  # raises before anything is kept
    if slide and slide != _last_slide:
        gdb.write(f"pagewho: KASLR: the kernel runs {slide:#x} above gdb's symbols; pagewho "
                  f"adjusts; for gdb itself: {_relocate_command(fresh)}\n", gdb.STDERR)
    _target, _ran, _last_slide = fresh, False, slide
    return fresh


def _relocate_command(t: GdbTarget) -> str:
    prog = gdb.current_progspace().filename or "vmlinux"
    return f"symbol-file -o {t.kaslr_offset():#x} {prog}"


def _reset(*_args: object) -> None:
    global _target, _last_slide
    _target = _last_slide = None


def _ran_on(*_args: object) -> None:
    global _ran
    _ran = True


def _forget_memory(*_args: object) -> None:
    if _target is not None:
        _target.forget_memory()


# Events In Python: new symbols -> start over; the inferior ran -> relearn
# the kernel; memory changed through gdb -> drop cached memory.
gdb.events.new_objfile.connect(_reset)
gdb.events.clear_objfiles.connect(_reset)
gdb.events.exited.connect(_reset)
gdb.events.cont.connect(_ran_on)
gdb.events.memory_changed.connect(_forget_memory)


class _Output:
    """gdb.write that holds back a one-line "pagewho: ..." message until the
    next write: when it is the last thing a failed run wrote, it becomes the
    gdb.GdbError instead of being printed and then raised again."""

    def __init__(self) -> None:
        self.held: str | None = None

    def __call__(self, text: str) -> None:
        self.flush()
        if text.startswith("pagewho: ") and text.count("\n") == 1 and text.endswith("\n"):
            self.held = text
        else:
            gdb.write(text)

    def flush(self) -> None:
        if self.held is not None:
            gdb.write(self.held)
            self.held = None


class PagewhoCommand(gdb.Command):
    """Who owns a page frame: pagewho [options] PFN...

Same arguments and output as the pagewho command line; "pagewho --help"
lists them.  Reads the selected inferior: a kernel behind QEMU's gdbstub or
an ELF vmcore.  Never writes to it."""

    def __init__(self) -> None:
        super().__init__("pagewho", gdb.COMMAND_DATA)

    def invoke(self, arg: str, from_tty: bool) -> None:
        self.dont_repeat()  # an empty line must not rerun a whole-memory summary
        try:
            argv = gdb.string_to_argv(arg)
        except gdb.error as e:
            raise gdb.GdbError(f"pagewho: {e}") from None
        out = _Output()
        try:
            status = _guarded(lambda: command.run(target(), argv, out))
        except gdb.GdbError:
            out.flush()
            raise
        if status:
            # the core's own one-line message, as an error so gdb scripts stop
            message, out.held = out.held, None
            raise gdb.GdbError((message or f"pagewho: failed ({status})").rstrip("\n"))
        out.flush()


class PagewhoOwner(gdb.Function):
    """$pagewho_owner(PFN): the owner kind of the page frame, as a string
(e.g. "slab", "buddy", "anon")."""

    def __init__(self) -> None:
        super().__init__("pagewho_owner")

    def invoke(self, pfn: gdb.Value) -> str:
        kind = getattr(command, "owner_kind", None)
        if kind is None:
            raise gdb.GdbError("pagewho: this pagewho core has no owner_kind()")
        try:
            number = int(pfn)
        except (gdb.error, TypeError, ValueError):
            raise gdb.GdbError("pagewho: $pagewho_owner wants a page frame number") from None
        return _guarded(lambda: kind(target(), number))


def _guarded(call):  # type: ignore[no-untyped-def]
    """Run ``call`` so that nothing but a one-line gdb.GdbError leaves it."""
    try:
        return call()
    except KeyboardInterrupt:
        raise gdb.GdbError("pagewho: interrupted") from None
    except gdb.GdbError:
        raise
    except (TargetError, ConnectionLost) as e:
        # may quote guest memory (a banner): no control characters reach the terminal
        raise gdb.GdbError(f"pagewho: {clean(str(e))}") from None
    except gdb.error as e:
        raise gdb.GdbError(f"pagewho: gdb: {e}") from None
    except Exception as e:  # noqa: BLE001 -- a bug in pagewho: one line, never a traceback
        if os.environ.get("PAGEWHO_DEBUG"):  # as the core does: the traceback, on request
            traceback.print_exc()
        raise gdb.GdbError(f"pagewho: internal error: {type(e).__name__}: {e}") from None


PagewhoCommand()
PagewhoOwner()
