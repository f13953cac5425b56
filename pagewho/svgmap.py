"""``pagewho --summary --map FILE.svg``: memory along the pfn axis, coloured by owner.

The pfn axis is cut into bins (at most 128 rows of 512 cells); each cell is
coloured by the kind that owns most of its pages, so fragmentation and where
each owner sits show at a glance.  The SVG is written by hand (no plotting
library); a .png is drawn with matplotlib when it imports (an optional extra),
otherwise the map is refused with a message.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

#: kind -> colour; kinds not listed are grey
COLOURS = {
    "buddy": "#e8e8e8", "pcp": "#c8c8c8", "free": "#b0b0b0",
    "slab": "#d62728", "large_kmalloc": "#ff9896", "pgtable": "#8c564b",
    "anon": "#1f77b4", "ksm": "#aec7e8", "pagecache": "#2ca02c", "shmem": "#98df8a",
    "swapcache": "#17becf", "hugetlb": "#9467bd", "vmalloc": "#ff7f0e", "kstack": "#ffbb78",
    "percpu": "#bcbd22", "page_pool": "#dbdb8d", "zsmalloc": "#c5b0d5", "movable": "#c49c94",
    "reserved": "#393b79", "zero": "#000000", "offline": "#7f7f7f", "guard": "#7f7f7f",
    "unaccepted": "#7f7f7f", "unknown": "#e377c2", "corrupt": "#ff00ff",
}
HOLE = "#ffffff"
COLS = 512
MAX_ROWS = 128
CELL = 2  # pixels


def _bins(summary: Any) -> Tuple[int, int, List[str]]:
    """(first pfn, pages per cell, kind per cell or "" for holes)."""
    chunks = summary.chunks
    names = summary.fs.kind_names
    if not chunks:
        return 0, 1, []
    first = chunks[0][0]
    last = chunks[-1][0] + len(chunks[-1][1])
    span = last - first
    per = max(1, -(-span // (COLS * MAX_ROWS)))
    ncells = -(-span // per)
    cells = [""] * ncells
    for c, kinds in chunks:
        n = len(kinds)
        a = c - first
        cell = a // per
        pos = 0
        while pos < n:
            end = min(n, (cell + 1) * per - a)
            seg = kinds[pos:end]
            best, best_n = -1, 0
            for kid in set(seg):
                m = seg.count(kid)
                if m > best_n:
                    best, best_n = kid, m
            cells[cell] = names[best]
            pos = end
            cell += 1
    return first, per, cells


def write_map(summary: Any, path: str) -> Dict[str, Any]:
    """Draw ``summary``'s pfn map into ``path`` (.svg, or .png with
    matplotlib); returns {"file", "pages_per_cell", "first_pfn"}."""
    first, per, cells = _bins(summary)
    if path.lower().endswith(".png"):
        _png(path, first, per, cells, summary)
    else:
        with open(path, "w") as f:
            f.write(_svg(first, per, cells, summary))
    return {"file": path, "first_pfn": first, "pages_per_cell": per}


def _legend(cells: List[str]) -> List[str]:
    seen = []
    for k in cells:
        if k and k not in seen:
            seen.append(k)
    order = list(COLOURS)
    return sorted(seen, key=lambda k: order.index(k) if k in order else len(order))


def _svg(first: int, per: int, cells: List[str], summary: Any) -> str:
    rows = -(-len(cells) // COLS)
    width = COLS * CELL
    legend = _legend(cells)
    top = 40
    height = top + rows * CELL + 20 + 16 * ((len(legend) + 3) // 4)
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
           'font-size="11">' % (width + 100, height),
           '<rect width="100%%" height="100%%" fill="%s"/>' % HOLE,
           '<text x="4" y="14">pagewho: %s, pfn %#x-%#x, %d pages per cell, %d cells per row</text>' % (
               _esc(summary.k.release), first, first + len(cells) * per - 1, per, COLS)]
    for r in range(rows):
        if r % 8 == 0:
            out.append('<text x="%d" y="%d" font-size="8">%#x</text>' % (
                width + 4, top + r * CELL + CELL, first + r * COLS * per))
    # one rectangle per run of equal cells within a row keeps the file small
    for r in range(rows):
        row = cells[r * COLS:(r + 1) * COLS]
        x = 0
        while x < len(row):
            k = row[x]
            e = x + 1
            while e < len(row) and row[e] == k:
                e += 1
            if k:
                out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="%s"><title>%s</title></rect>' % (
                    x * CELL, top + r * CELL, (e - x) * CELL, CELL, COLOURS.get(k, "#999999"), k))
            x = e
    y = top + rows * CELL + 20
    for i, k in enumerate(legend):
        lx = 4 + (i % 4) * 250
        ly = y + (i // 4) * 16
        out.append('<rect x="%d" y="%d" width="10" height="10" fill="%s" stroke="#000" stroke-width="0.3"/>'
                   '<text x="%d" y="%d">%s</text>' % (lx, ly - 9, COLOURS.get(k, "#999999"), lx + 14, ly, _esc(k)))
    out.append("</svg>\n")
    return "\n".join(out)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _png(path: str, first: int, per: int, cells: List[str], summary: Any) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except Exception:
        raise OSError("a .png map needs matplotlib (pip install matplotlib); use .svg") from None
    rows = -(-len(cells) // COLS)

    def rgb(h: str) -> Tuple[float, float, float]:
        return tuple(int(h[i:i + 2], 16) / 255.0 for i in (1, 3, 5))  # type: ignore[return-value]

    img = [[rgb(COLOURS.get(k, "#999999") if k else HOLE) for k in cells[r * COLS:(r + 1) * COLS]]
           for r in range(rows)]
    if img and len(img[-1]) < COLS:
        img[-1] += [rgb(HOLE)] * (COLS - len(img[-1]))
    fig, ax = plt.subplots(figsize=(10, 2 + rows / 24))
    ax.imshow(img, aspect="auto", interpolation="nearest")
    ax.set_title("pagewho: %s, %d pages per cell" % (summary.k.release, per))
    ax.set_xlabel("cell in row")
    ax.set_ylabel("row (%d pfns each)" % (COLS * per))
    ax.legend(handles=[Patch(color=COLOURS.get(k, "#999999"), label=k) for k in _legend(cells)],
              loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
