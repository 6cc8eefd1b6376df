"""The run viewer in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright)
opens the site of the fixture run (tests/data/viewer/run) from file://, expands a search-tree node,
filters the samples, and shows model text that is HTML as text without running it.

.ci/run installs Chromium; this test fails (never skips) when the browser or Playwright is missing,
unless SEARCHRL_NO_BROWSER=1 is set explicitly.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

if os.environ.get("SEARCHRL_NO_BROWSER") == "1":
    pytest.skip("SEARCHRL_NO_BROWSER=1: browser tests switched off explicitly", allow_module_level=True)

FIXTURE = Path(__file__).parent / "data" / "viewer" / "run"
CHROMIUM = os.environ.get("SEARCHRL_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from searchrl.pipelines.view import run_view

    run = tmp_path_factory.mktemp("viewer") / "run"
    shutil.copytree(FIXTURE, run)
    return run_view(run, run.parent / "site", page_size=50).parent


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), f"{CHROMIUM}: no Chromium (.ci/run installs Debian's chromium)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    pg = browser.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    yield pg
    pg.close()


def _open(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("html[data-ready='1']", timeout=10_000)
    assert not page.errors, page.errors


def test_tree_nodes_expand_and_show_their_children(site, page):
    _open(page, (site / "index.html").as_uri())
    page.click("#nav-trees")
    page.wait_for_url("**/trees.html")
    page.get_by_role("link", name="compare-search · mcts-star at 100 tokens").click()
    page.wait_for_url("**/trees-001-1.html")
    page.wait_for_selector("html[data-ready='1']")
    card = page.locator("article.item").first
    # the root is open: its children are drawn, their children not yet
    assert card.get_by_text("Exploring Operation: 4*6=24").is_visible()
    assert card.get_by_text("GRANDCHILD 3-2=1").count() == 0
    node = card.locator("li.node[data-node='1']")
    assert "chosen" in node.get_attribute("class")
    node.locator(":scope > button.toggle").click()
    grandchild = card.get_by_text("GRANDCHILD 3-2=1")
    assert grandchild.is_visible()
    assert node.locator(":scope > .label").get_by_text("visits 5").is_visible()
    node.locator(":scope > button.toggle").click()  # collapses again
    assert not grandchild.is_visible()
    card.locator("button.expand-chosen").click()
    assert card.get_by_text("24*1=24").is_visible() and card.locator("li.chosen").count() == 4


def test_samples_filter_by_grade(site, page):
    _open(page, (site / "samples.html").as_uri())
    page.locator("a", has_text="eval · test_seen · sampled").first.click()
    page.wait_for_url("**/samples-001-1.html")
    page.wait_for_selector("html[data-ready='1']")
    correct = page.locator("article.item[data-correct='1']")
    wrong = page.get_by_text("WRONG-TURN-MARKER")
    assert correct.is_visible() and wrong.is_visible()
    page.check("#filter-incorrect")
    assert wrong.is_visible() and not correct.is_visible()
    assert page.locator("#shown").text_content() == "2 of 3 shown on this page"
    page.check("#filter-correct")
    assert correct.is_visible() and not wrong.is_visible()
    # the correct sample's SoS trace, drawn as a tree: the goal's path is highlighted
    correct.locator("summary", has_text="search tree of this Stream-of-Search trace").click()
    correct.locator("button.expand-chosen").click()
    assert correct.locator("li.chosen").count() == 4 and correct.get_by_text("24*1=24").first.is_visible()
    page.check("#filter-all")
    page.fill("#filter-text", "wrong-turn")
    assert wrong.is_visible() and not correct.is_visible()
    # the group's incorrect samples across all its pages
    page.click("#grade-incorrect")
    page.wait_for_url("**/samples-001-incorrect-1.html")
    page.wait_for_selector("html[data-ready='1']")
    assert page.locator("article.item").count() == 2 and correct.count() == 0
    assert page.get_by_text("WRONG-TURN-MARKER").is_visible()


def test_model_text_with_markup_is_shown_as_text(site, page):
    for name in ("samples-001-1.html", "trees-001-1.html"):
        _open(page, (site / name).as_uri())
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.locator("img[src=x]").count() == 0
        assert page.get_by_text("<script>window.__pwned=1</script>", exact=False).first.is_visible()
    shown = page.locator("li.node[data-node='1'] .action").last.text_content()
    assert shown.startswith("<script>window.__pwned=1</script><img src=x")


def test_guided_prefix_episodes_and_curves(site, page):
    _open(page, (site / "selftrain-001-1.html").as_uri())
    prefix = page.locator("pre.response span.prefix")
    assert prefix.text_content().endswith("Resulting Numbers: [15, 7]\n")
    assert page.locator("pre.response span.continuation").text_content().startswith("Generated Node #0,0")
    _open(page, (site / "episodes-001-1.html").as_uri())
    assert page.get_by_text("Turn 2 · model").is_visible() and page.get_by_text("public tests pass").is_visible()
    assert page.get_by_text("Expected: 2").first.is_visible()
    _open(page, (site / "training.html").as_uri())
    assert page.locator("svg.chart").count() >= 2  # the first log (RL) is open: one chart per metric
    assert page.locator("svg.chart title", has_text="reward/mean").count() == 1
    _open(page, (site / "index.html").as_uri())
    assert page.get_by_role("cell", name="33.3 (0.0..100.0)").is_visible()
    assert page.locator("figure img").first.evaluate("img => img.naturalWidth") == 8  # the plot was copied in
