"""The viewer's static site: plain HTML pages, each with its data embedded as JSON, one script and
one style sheet copied beside them. No server, no network, no build step: the pages open from
``file://``.

Every page is the same shell (:func:`page`): a ``<script type="application/json" id="data">``
element holding the page's part of the model and ``assets/viewer.js``, which draws it with
``textContent`` and ``createElement`` only (never ``innerHTML``), so model text (responses,
prompts, feedback) is shown as text, whatever it contains. The embedded JSON is escaped so that
no model text can end the script element (:func:`embed_json`: ``<``, ``>`` and ``&`` as ``\\u003c``,
``\\u003e``, ``\\u0026``; the HTML parser then never sees a ``</script>`` or a comment opener
inside it; ``JSON.parse`` reads the same string back).

Large lists are paginated: samples, self-training generations, episodes and search trees are
grouped by the directory (or trees file) that holds them, and each group is cut into pages of
``page_size`` items (``<section>-<group>-<page>.html``), listed on the section's index page; the
correct and the incorrect items of a group have page sets of their own
(``<section>-<group>-incorrect-<page>.html``), so a filter by grade reaches past one page (the
filter on a page hides and shows that page's items at once).

The site is written into a temporary directory beside ``out`` and moved into place as a whole,
so a reader never sees half a site and a page of an earlier, larger site never survives.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from ..data import InputError, atomic_write, embed_json

#: the sections with paginated groups: (key in the model, page title, what one item is)
SECTIONS = (("samples", "Samples", "sample"), ("selftrain", "Self-training", "generation"),
            ("episodes", "Episodes", "episode"), ("trees", "Search trees", "tree"))
ASSETS = ("viewer.js", "viewer.css")
DEFAULT_PAGE_SIZE = 50


def _finite(obj: Any) -> Any:
    """NaN and infinities (a diverged loss) as ``null``: JSON has no such numbers."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def page(title: str, data: dict) -> str:
    """One page: the shell, the page's data embedded, the shared script and style sheet."""
    return ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<link rel=\"stylesheet\" href=\"assets/viewer.css\">\n</head>\n"
            "<body>\n<header id=\"top\"></header>\n<main id=\"app\"><noscript>This viewer draws its pages with "
            "JavaScript; enable it for file:// pages.</noscript></main>\n"
            f"<script type=\"application/json\" id=\"data\">{embed_json(_finite(data))}</script>\n"
            "<script src=\"assets/viewer.js\"></script>\n</body>\n</html>\n")


def _pages(n: int, size: int) -> int:
    return max(1, -(-n // size))


def page_name(section: str, group: int, page_no: int, grade: str = "all") -> str:
    """``samples-001-3.html``: page 3 of the first group; ``samples-001-incorrect-1.html``: its incorrect ones."""
    return f"{section}-{group + 1:03d}-{'' if grade == 'all' else grade + '-'}{page_no}.html"


#: the page sets of a group: every item, and the correct and the incorrect ones alone
GRADES = {"all": lambda it: True, "correct": lambda it: bool(it.get("correct")),
          "incorrect": lambda it: not it.get("correct")}


def write_site(model: dict, out: str | os.PathLike, page_size: int = DEFAULT_PAGE_SIZE) -> Path:
    """Write the site for ``model`` (:func:`searchrl.view.collect.collect`) into ``out``; returns the
    path of its ``index.html``. ``out`` is replaced whole (only if it is absent or a site this
    function wrote: a directory with another ``index.html`` is refused)."""
    if page_size < 1:
        raise InputError(f"--page-size {page_size}: at least 1")
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "assets" / "viewer.js").is_file())):
        raise InputError(f"{out}: exists and is not a site the viewer wrote; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _write(model, tmp, page_size)
        os.chmod(tmp, 0o755)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "site")
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "index.html"


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)


def _write(model: dict, out: Path, page_size: int) -> None:
    (out / "assets").mkdir()
    for name in ASSETS:
        _write_text(out / "assets" / name, (resources.files("searchrl.view") / "assets" / name).read_text("utf-8"))
    # plots: copied in (a site must not reach back into the run directory)
    plots, srcs = [], {}
    for k, p in enumerate(model["plots"]):
        dest = f"plots/{k + 1:03d}-{Path(p['path']).name.replace(' ', '_')}"
        (out / "plots").mkdir(exist_ok=True)
        shutil.copyfile(p["file"], out / dest)
        srcs[p["path"]] = dest
        plots.append({"path": p["path"], "src": dest})
    results = []
    for r in model["results"]:
        blocks = []
        for b in r["blocks"]:
            if b["type"] == "image":
                rel = os.path.normpath(os.path.join(r["dir"], b["src"])).replace(os.sep, "/")
                b = {**b, "src": srcs.get(rel)}  # None: the plot is not in the run directory
            blocks.append(b)
        results.append({"path": r["path"], "blocks": blocks})

    run = model["run"]
    nav = [{"key": "overview", "title": "Overview", "href": "index.html", "count": None}]
    for key, title, _ in SECTIONS:
        nav.append({"key": key, "title": title, "href": f"{key}.html",
                    "count": sum(g["counts"]["total"] for g in model[key])})
    nav.append({"key": "training", "title": "Training curves", "href": "training.html", "count": len(model["curves"])})
    common = {"run": {"name": run["name"], "path": run["path"]}, "nav": nav}

    def emit(name: str, title: str, data: dict) -> None:
        _write_text(out / name, page(f"{title} · {run['name']}", {**common, **data}))

    emit("index.html", "Overview", {"page": "overview", "config_text": run["config_text"], "task": run["task"],
                                    "timings": run["timings"], "stages": model["stages"], "results": results,
                                    "plots": plots})
    emit("training.html", "Training curves", {"page": "training", "curves": model["curves"]})
    for key, title, unit in SECTIONS:
        listing = []
        for gi, g in enumerate(model[key]):
            sets = {grade: [it for it in g["items"] if keep(it)] for grade, keep in GRADES.items()}
            pages = {grade: [page_name(key, gi, p + 1, grade) for p in range(_pages(len(its), page_size))]
                     if its or grade == "all" else [] for grade, its in sets.items()}
            listing.append({"title": g["title"], "path": g["path"], "counts": g["counts"], "pages": pages["all"],
                            "grades": {grade: ps[0] if ps else None for grade, ps in pages.items()}})
            for grade, items in sets.items():
                names = pages[grade]
                for p, name in enumerate(names):
                    chunk = items[p * page_size:(p + 1) * page_size]
                    what = "" if grade == "all" else f", {grade} only"
                    emit(name, f"{title}: {g['title']}{what} ({p + 1}/{len(names)})",
                         {"page": key, "unit": unit, "group": {"title": g["title"], "path": g["path"],
                                                               "counts": g["counts"]},
                          "grade": grade, "grades": {gr: ps[0] if ps else None for gr, ps in pages.items()},
                          "items": chunk, "page_no": p + 1, "pages": names, "first": p * page_size,
                          "total": len(items), "section_href": f"{key}.html"})
        emit(f"{key}.html", title, {"page": "section", "section": key, "title": title, "unit": unit,
                                    "groups": listing})


__all__ = ["write_site", "embed_json", "page", "page_name", "SECTIONS", "DEFAULT_PAGE_SIZE"]
