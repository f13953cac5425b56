"""Page cache and shmem/tmpfs pages: which file, where in it, who maps it.

``folio->mapping`` is the file's ``struct address_space``; its ``host`` is
the inode (``i_ino``, ``i_sb`` -> filesystem type ``s_type->name`` and
device ``s_id``).  The path comes from one of the inode's dentries
(``i_dentry``, linked through ``d_alias`` -- inside the ``d_u`` union on the
kernels checked, 5.10 .. 7.x -- read by whichever name the debug info has),
walked up ``d_parent``, then across mounts (``mount.mnt_mountpoint`` in
``mnt_parent``) found from the superblock's ``s_mounts`` list.  A file on
a mount that is not in init's mount namespace (the internal shm mount of
memfd and SysV shm, a detached mount) is shown as "<fstype dev>:/path".

Processes mapping the page come from ``mapping->i_mmap``, the interval tree
of the vmas that map the file (``vma->shared.rb``), each checked against
the vma's page tables (:func:`pagewho.owners.tasks.mappers`).

Checked against the sample dumps of 5.10, 6.1, 6.12 and 7.x.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..kernel import Kernel
from ..owner import Owner, register
from ..page import Page, decoder_of
from ..target import FaultError
from ..text import clean
from .tasks import MAX_MAPPERS, is_kernel_ptr, list_nodes, mappers, mappers_text, rb_nodes, unnamed_note

#: deepest directory nesting followed, and most mounts crossed, per path
MAX_DEPTH = 64
MAX_MOUNTS = 64
#: how many of a superblock's mounts are tried
MAX_SB_MOUNTS = 256


# -- dentries, mounts and paths ---------------------------------------------------

def _alias_off(k: Kernel) -> Optional[int]:
    off = k.memo.get("file.d_alias")
    if off is None:
        off = k.off_opt("struct dentry", "d_alias")
        if off is None:
            off = k.off_opt("struct dentry", "d_u.d_alias")
        k.memo["file.d_alias"] = off if off is not None else -1
    return None if off == -1 else off  # type: ignore[return-value]


def dentry_name(k: Kernel, dentry: int) -> bytes:
    """The raw name of a dentry (d_name.name; NUL-terminated in the kernel)."""
    name = k.u64(dentry + k.off("struct dentry", "d_name") + k.off("struct qstr", "name"))
    return k.cstring(name, 256) if name else b"?"


def dentry_parent(k: Kernel, dentry: int) -> int:
    return k.u64(dentry + k.off("struct dentry", "d_parent"))


def dentry_unhashed(k: Kernel, dentry: int) -> bool:
    """d_unhashed() of a non-root dentry: deleted (or never hashed)."""
    if dentry_parent(k, dentry) == dentry:
        return False
    d_hash = k.off_opt("struct dentry", "d_hash")
    pprev = k.off_opt("struct hlist_bl_node", "pprev")
    if d_hash is None or pprev is None:
        return False
    return k.u64(dentry + d_hash + pprev) == 0


def inode_dentry(k: Kernel, inode: int) -> Optional[int]:
    """One dentry of ``inode`` (the first on i_dentry), or None."""
    alias = _alias_off(k)
    if alias is None:
        return None
    first = k.u64(inode + k.off("struct inode", "i_dentry"))
    if not first or not is_kernel_ptr(first):
        return None
    return first - alias


def _ns_root_mount(k: Kernel) -> Optional[int]:
    """init's root mount (init_task.nsproxy->mnt_ns->root), cached."""
    if "file.ns_root" not in k.memo:
        root = None
        try:
            nsproxy = k.u64(k.sym("init_task") + k.off("struct task_struct", "nsproxy"))
            mnt_ns = k.u64(nsproxy + k.off("struct nsproxy", "mnt_ns"))
            root = k.u64(mnt_ns + k.off("struct mnt_namespace", "root"))
        except FaultError:
            root = None
        k.memo["file.ns_root"] = root
    return k.memo["file.ns_root"]  # type: ignore[return-value]


def _walk_to(k: Kernel, dentry: int, stop: int, names: List[bytes]) -> bool:
    """Append names from ``dentry`` up to (not including) ``stop``; False
    when the superblock's root comes first (``stop`` is not an ancestor)."""
    d = dentry
    for _ in range(MAX_DEPTH):
        if d == stop:
            return True
        parent = dentry_parent(k, d)
        if parent == d or not is_kernel_ptr(parent):
            return False
        names.append(dentry_name(k, d))
        d = parent
    return False


def mount_path(k: Kernel, mount: int, dentry: int) -> Optional[Tuple[List[bytes], bool]]:
    """Path components (root first) of ``dentry`` seen through ``mount``,
    and whether the walk ended at init's root mount; None when ``dentry``
    is not under the mount's root."""
    M = "struct mount"
    o_mnt = k.off(M, "mnt")
    o_root = k.off("struct vfsmount", "mnt_root")
    o_parent = k.off(M, "mnt_parent")
    o_point = k.off(M, "mnt_mountpoint")
    names: List[bytes] = []
    m, d = mount, dentry
    for _ in range(MAX_MOUNTS):
        root = k.u64(m + o_mnt + o_root)
        if not _walk_to(k, d, root, names):
            return None
        parent = k.u64(m + o_parent)
        if parent == m or not is_kernel_ptr(parent):
            names.reverse()
            return names, m == _ns_root_mount(k)
        d = k.u64(m + o_point)
        m = parent
    return None


def sb_mounts(k: Kernel, sb: int) -> List[int]:
    """The mounts of a superblock (at most MAX_SB_MOUNTS).

    Up to v6.x ``sb->s_mounts`` is a list_head of ``mount.mnt_instance``;
    later kernels (seen in 7.2) make it a ``struct mount *`` chained through
    ``mount.mnt_next_for_sb``.
    """
    o_mounts = k.off_opt("struct super_block", "s_mounts")
    if o_mounts is None:
        return []
    out: List[int] = []
    o_inst = k.off_opt("struct mount", "mnt_instance")
    if o_inst is not None:
        for node in list_nodes(k, sb + o_mounts, MAX_SB_MOUNTS):
            out.append(node - o_inst)
        return out
    o_next = k.off_opt("struct mount", "mnt_next_for_sb")
    if o_next is None:
        return out
    m = k.u64(sb + o_mounts)
    while is_kernel_ptr(m) and m not in out and len(out) < MAX_SB_MOUNTS:
        out.append(m)
        m = k.u64(m + o_next)
    return out


def sb_info(k: Kernel, sb: int) -> Tuple[str, str]:
    """(filesystem type name, s_id device name) of a superblock, cleaned."""
    memo = k.memo.setdefault("file.sb", {})
    if sb not in memo:  # type: ignore[operator]
        fstype = dev = "?"
        try:
            s_type = k.u64(sb + k.off("struct super_block", "s_type"))
            name = k.u64(s_type + k.off("struct file_system_type", "name"))
            fstype = clean(k.cstring(name, 64))
            dev = clean(k.read(sb + k.off("struct super_block", "s_id"), 32).split(b"\0", 1)[0])
        except FaultError:
            pass
        memo[sb] = (fstype, dev)  # type: ignore[index]
    return memo[sb]  # type: ignore[index,return-value]


def dentry_path(k: Kernel, dentry: int, vfsmount: Optional[int] = None) -> Dict[str, Any]:
    """Where a dentry is: {"path", "mounted", "fs", "dev", "deleted"}.

    ``path`` is the absolute path in init's mount namespace when
    ``mounted``; otherwise the path inside its filesystem, shown by callers
    as "<fs dev>:path".  ``vfsmount`` (from a struct path) picks the mount;
    without it the superblock's mounts are tried, init's namespace first.
    """
    memo = k.memo.setdefault("file.paths", {})
    key = (dentry, vfsmount)
    if key in memo:  # type: ignore[operator]
        return memo[key]  # type: ignore[index]
    sb = k.u64(dentry + k.off("struct dentry", "d_sb"))
    fstype, dev = sb_info(k, sb)
    result: Optional[Tuple[List[bytes], bool]] = None
    candidates: List[int] = []
    o_mnt = k.off("struct mount", "mnt")
    if vfsmount:
        candidates.append(vfsmount - o_mnt)
    else:
        candidates.extend(sb_mounts(k, sb))
    for mount in candidates:
        try:
            got = mount_path(k, mount, dentry)
        except FaultError:
            continue
        if got is not None and (result is None or (got[1] and not result[1])):
            result = got
            if got[1]:
                break
    if result is None:
        # no usable mount: the path inside the filesystem
        names: List[bytes] = []
        _walk_to(k, dentry, 0, names)
        names.reverse()
        result = (names, False)
    names, mounted = result
    path = "/" + "/".join(clean(n) for n in names)
    info = {"path": path, "mounted": mounted, "fs": fstype, "dev": dev,
            "deleted": dentry_unhashed(k, dentry)}
    memo[key] = info  # type: ignore[index]
    return info


def path_text(info: Dict[str, Any]) -> str:
    """A path for people: "/data/f", or "<tmpfs tmpfs>:/memfd:x" when not
    reachable from init's root; " (deleted)" appended when unlinked."""
    text = info["path"] if info["mounted"] else "<%s %s>:%s" % (info["fs"], info["dev"], info["path"])
    return text + (" (deleted)" if info.get("deleted") else "")


def file_path(k: Kernel, file: int) -> Dict[str, Any]:
    """:func:`dentry_path` of a ``struct file`` (its f_path)."""
    o_path = k.off("struct file", "f_path")
    dentry = k.u64(file + o_path + k.off("struct path", "dentry"))
    mnt = k.u64(file + o_path + k.off("struct path", "mnt"))
    return dentry_path(k, dentry, mnt or None)


# -- the namer ----------------------------------------------------------------------

def page_pgoff(page: Page, head: Page) -> int:
    """The index of ``page`` in its file or anon_vma: the folio's index plus
    the page's place in the folio (a tail page's own index is not set)."""
    if page.is_tail or head.is_head:
        return head.index + (page.pfn - head.pfn)
    return page.index


def _is_shmem_mapping(k: Kernel, mapping: int, fstype: str) -> bool:
    aops = k.sym_opt("shmem_aops")
    if aops is not None:
        try:
            return k.u64(mapping + k.off("struct address_space", "a_ops")) == aops
        except FaultError:
            pass
    return fstype in ("tmpfs", "shmem", "devtmpfs")


def i_mmap_vmas(k: Kernel, mapping: int) -> Iterator[int]:
    """The vmas on ``mapping->i_mmap`` (an rb_root_cached of vma->shared.rb)."""
    o_rb = k.off("struct vm_area_struct", "shared.rb")
    for node in rb_nodes(k, mapping + k.off("struct address_space", "i_mmap")):
        yield node - o_rb


def bdev_of_inode(k: Kernel, inode: int) -> Optional[Dict[str, Any]]:
    """{"disk", "devt", "partition"} of a block device's own inode (the page
    cache of a raw block device: buffer heads, metadata), or None.  The inode
    sits in ``struct bdev_inode`` after its ``block_device`` (fs/block_dev.c,
    block/bdev.c)."""
    o_vfs = k.off_opt("struct bdev_inode", "vfs_inode")
    if o_vfs is None:
        return None
    B = "struct block_device"
    bdev = inode - o_vfs
    devt = k.u32(bdev + k.off(B, "bd_dev"))
    major, minor = devt >> 20, devt & 0xFFFFF
    out: Dict[str, Any] = {"devt": "%d:%d" % (major, minor), "disk": None, "partition": None}
    disk = k.u64(bdev + k.off(B, "bd_disk"))
    if is_kernel_ptr(disk):
        G = "struct gendisk"
        out["disk"] = clean(k.read(disk + k.off(G, "disk_name"), 32).split(b"\0", 1)[0])
        first = k.u32(disk + k.off(G, "first_minor"))
        if 0 < minor - first < 256:
            out["partition"] = minor - first
    return out


@register("pagecache", "shmem")
def name_file(k: Kernel, page: Page, head: Page, owner: Owner) -> None:
    d = decoder_of(k)
    mapping = head.mapping & ~3
    inode = k.u64(mapping + k.off("struct address_space", "host"))
    det = owner.detail
    pgoff = page_pgoff(page, head)
    det["mapping"] = mapping
    det["inode"] = inode
    if not is_kernel_ptr(inode):
        det["summary"] = "address_space %#x without an inode, index %#x" % (mapping, pgoff)
        return
    ino = k.u64(inode + k.off("struct inode", "i_ino"))
    sb = k.u64(inode + k.off("struct inode", "i_sb"))
    fstype, dev = sb_info(k, sb)
    det["ino"] = ino
    det["fs"] = fstype
    det["dev"] = dev
    det["offset"] = pgoff << k.page_shift
    det["index"] = pgoff
    shmem = _is_shmem_mapping(k, mapping, fstype)
    if shmem and owner.kind == "pagecache":
        owner.kind = "shmem"
    det["shmem"] = owner.kind == "shmem"
    flags = head.flags
    det["dirty"] = d.test(flags, "PG_dirty")
    det["writeback"] = d.test(flags, "PG_writeback")
    det["uptodate"] = d.test(flags, "PG_uptodate")
    if head.is_head:
        det["order"] = head.order
        det["head_pfn"] = head.pfn
    path = None
    dentry = inode_dentry(k, inode) if fstype != "bdev" else None
    if fstype == "bdev":
        bdev = bdev_of_inode(k, inode)
        if bdev is not None:
            det["bdev"] = bdev
            path = "block device %s (%s)%s" % (
                bdev["disk"] or "?", bdev["devt"],
                ", partition %d" % bdev["partition"] if bdev["partition"] else "")
            det["path"] = None
    if dentry is not None:
        try:
            info = dentry_path(k, dentry)
            path = path_text(info)
            det["path"] = path
            det["mounted"] = info["mounted"]
            det["deleted"] = info["deleted"]
        except FaultError as e:
            owner.notes.append("path unreadable: memory at %#x is not in the dump" % e.address)
    if path is None or fstype == "bdev":
        det["path"] = None
    found, _ = mappers(k, i_mmap_vmas(k, mapping), pgoff, page.pfn)
    det["mappers"] = found[:MAX_MAPPERS]
    det["nr_mappers"] = len(found)
    note = unnamed_note(k, found)
    if note:
        owner.notes.append(note)
    state = [s for s in ("dirty", "writeback") if det[s]]
    where = path if path is not None else "<%s %s> inode %d" % (fstype, dev, ino)
    text = "%s offset %#x (%s %s, ino %d)" % (clean(where), det["offset"], fstype, dev, ino)
    if state:
        text += ", " + "+".join(state)
    if found:
        text += "; mapped by " + mappers_text(found)
    det["summary"] = text
