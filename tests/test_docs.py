"""The documentation: the MkDocs site builds with --strict, every relative link of README.md and
docs/ resolves (file and anchor), and the Python examples of the README and the docs pages run.

Why: the README and docs are what a new user tries first; a broken link or an example that no
longer matches the API is a bug like any other, so they are tested like code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: pages whose ```python blocks run, each page's blocks in order as one script (a block preceded by
#: the line ``<!-- no-test -->`` does not)
RUNNABLE = ("README.md", "docs/getting-started.md", "docs/api.md")
FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"(?<!\!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown text, in order, leaving out any preceded by <!-- no-test -->."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            prev = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            if prev != "<!-- no-test -->":
                blocks.append("\n".join(lines[i + 1:j]) + "\n")
            i = j
        i += 1
    return blocks


def _prose(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the text outside fenced code blocks."""
    out, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append((n, line))
    return out


def anchors(path: Path) -> set[str]:
    """The heading ids MkDocs gives a page (Python-Markdown's toc slugify of the heading text)."""
    from markdown.extensions.toc import slugify

    ids = set()
    for _, line in _prose(path.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            text = m.group(1).replace("`", "").replace("\\", "")
            ids.add(slugify(text, "-"))
    return ids


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Every relative link (and image) of ``page`` whose file or anchor does not exist, as file:line: target."""
    bad = []
    for n, line in _prose(page.read_text(encoding="utf-8")):
        line = re.sub(r"`[^`]*`", "", line)  # inline code is not a link
        for m in LINK.finditer(line):
            target = m.group(1) or m.group(2)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = page if not path else (page.parent / path).resolve()
            where = f"{page.relative_to(root)}:{n}: {target}"
            if not dest.exists():
                bad.append(f"{where} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                bad.append(f"{where} (no such heading)")
    return bad


def test_every_relative_link_resolves():
    bad = [b for page in _pages() for b in broken_links(page)]
    assert not bad, "\n".join(bad)


def test_the_link_check_finds_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## A section\n")
    page.write_text("[ok](other.md#a-section) [no file](missing.md) [no anchor](other.md#nope)\n"
                    "```\n[in code](missing.md)\n```\n![img](nope.png) `[inline](missing.md)`\n")
    assert broken_links(page, tmp_path) == ["page.md:1: missing.md (no such file)", "page.md:1: other.md#nope (no such heading)",
                   "page.md:5: nope.png (no such file)"]


def test_python_blocks_honour_no_test():
    text = "```python\na = 1\n```\n\n<!-- no-test -->\n\n```python\nb = 2\n```\n```bash\nc\n```\n```python\nd = 3\n```\n"
    assert python_blocks(text) == ["a = 1\n", "d = 3\n"]


def test_the_api_page_covers_the_python_api():
    """docs/api.md shows each use the issue asked for, each in runnable code."""
    code = "".join(python_blocks((DOCS / "api.md").read_text(encoding="utf-8")))
    for call in ("make_task(", "make_generator(", "rollout(", "registry.get(", ".search(", "train_sft(",
                 "get_loss(", "trl_reward(", "GRPOTrainer("):
        assert call in code, call


@pytest.mark.parametrize("page", [p for p in RUNNABLE if python_blocks((ROOT / p).read_text(encoding="utf-8"))])
def test_python_examples_run(page, tmp_path):
    """A page's examples, in order, as one script in a fresh interpreter (CPU, one thread)."""
    script = tmp_path / "example.py"
    script.write_text("\n".join(python_blocks((ROOT / page).read_text(encoding="utf-8"))), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, f"{page}'s examples failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"


def test_mkdocs_build_strict(tmp_path):
    """The site builds with every warning an error (broken links and anchors, pages missing from the nav,
    docstrings the reference cannot read)."""
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=180,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    for page in ("index.html", "api/index.html", "reference/index.html", "methods/rest/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    assert "searchrl.engine.factory.make_generator" in (tmp_path / "site" / "reference" / "index.html").read_text()
