"""The run viewer without a browser: the SoS trace parser, the escaping of embedded JSON, what the
collector finds in a run directory (tests/data/viewer/run, made by its make_run.py), the command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from searchrl.data import InputError
from searchrl.tasks.countdown.traces import bfs_trace, dfs_trace
from searchrl.view import collect, embed_json, parse_trace, write_site
from searchrl.view.collect import group_title, parse_markdown
from searchrl.view.site import page

FIXTURE = Path(__file__).parent / "data" / "viewer" / "run"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run(tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(FIXTURE, dest)
    return dest


# ----------------------------------------------------------------------------- SoS traces


def _chosen(tree):
    return [n["action"] for n in tree["nodes"] if n["chosen"]]


def test_sos_parser_rebuilds_the_dfs_tree():
    tree = parse_trace(dfs_trace(24, [2, 3, 4, 6], threshold=24))
    nodes = tree["nodes"]
    assert tree["unparsed"] == 0 and tree["goal"] is not None
    assert _chosen(tree) == ["start", "4*6=24", "3-2=1", "24*1=24"]
    by_name = {n["name"]: n for n in nodes if n["name"]}
    assert nodes[0]["state"] == "[2, 3, 4, 6]" and nodes[0]["parent"] is None
    # 0,0 is entered once and returned to twice when its first children fail
    assert by_name["0,0"]["visits"] == 3 and by_name["0,0"]["status"] == "visited"
    assert by_name["0,0,0"]["parent"] == by_name["0,0"]["id"]
    dead = [n for n in nodes if n["status"] == "dead"]
    assert dead and all(n["terminal"] and n["reward"] == 0.0 for n in dead)
    goal = nodes[tree["goal"]]
    assert goal["status"] == "goal" and goal["state"] == "[24]" and goal["parent"] == by_name["0,0,2"]["id"]


def test_sos_parser_reads_bfs_traces_and_unsolved_ones():
    tree = parse_trace(bfs_trace(24, [2, 3, 4, 6], 3))
    assert tree["goal"] is not None and _chosen(tree)[-1].endswith("=24") and tree["unparsed"] == 0
    unsolved = parse_trace(dfs_trace(100, [2, 3, 5], threshold=100))
    assert unsolved["goal"] is None and not _chosen(unsolved) and len(unsolved["nodes"]) > 3


def test_sos_parser_keeps_what_model_text_gets_wrong():
    text = ("Current State: 15:[3, 5, 7], Operations: []\n"
            "Exploring Operation: 3*5=15, Resulting Numbers: [15, 7]\n"
            "Generated Node #0,0: 15:[15, 7] Operation: 3*5=15\n"
            "garbage line <b>\n"
            "Moving to Node #0,0,4\n"  # never generated: made under its named parent
            "Exploring Operation: 15*1=15, Resulting Numbers: [15]\n"
            "15,15 equal: Goal Reached, , Operations: run-on text\n")
    tree = parse_trace(text)
    nodes = tree["nodes"]
    unknown = next(n for n in nodes if n["status"] == "unknown")
    assert unknown["name"] == "0,0,4" and nodes[unknown["parent"]]["name"] == "0,0" and unknown["visits"] == 1
    assert tree["unparsed"] == 2  # the garbage line and the text run on after the goal line
    assert any("garbage line <b>" in note for note in nodes[0]["notes"])
    assert _chosen(tree) == ["start", "3*5=15", unknown["action"], "15*1=15"]
    assert parse_trace("")["nodes"][0]["action"] == "start" and parse_trace("no trace")["unparsed"] == 1


# ----------------------------------------------------------------------------- escaping


def test_embedded_json_cannot_end_its_script_element():
    evil = {"response": "</script><script>alert(1)</script><!-- & \u2028 </SCRIPT >", "n": [1, 2.5, None]}
    text = embed_json(evil)
    assert not any(c in text for c in "<>&\u2028")
    assert json.loads(text) == evil  # the same string comes back
    html = page("t</title><script>", {"x": evil})
    assert html.lower().count("</script") == 2  # the data element's and the viewer script's own, nothing else
    assert "<title>t&lt;/title&gt;&lt;script&gt;</title>" in html
    start = html.index('id="data">') + len('id="data">')
    assert json.loads(html[start:html.index("</script>", start)]) == {"x": evil}


def test_nan_in_metrics_becomes_null():
    html = page("t", {"loss": [1.0, float("nan"), float("inf")]})
    assert "[1.0,null,null]" in html


# ----------------------------------------------------------------------------- collecting a run


def test_collect_finds_every_kind_of_record(run):
    m = collect(run)
    [samples] = m["samples"]
    assert samples["title"] == "eval · test_seen · sampled" and samples["counts"] == {"total": 3, "correct": 1}
    first = samples["items"][0]
    assert first["problem"]["target"] == 24 and first["sos"]["goal"] is not None  # problem from data/test_seen
    # Guided-ReST: the decoded prefix is the start of the response text
    [gen] = m["selftrain"]
    guided = next(it for it in gen["items"] if it["prefix_len"])
    assert guided["response"][:guided["prefix_chars"]].endswith("Resulting Numbers: [15, 7]\n")
    assert guided["response"][guided["prefix_chars"]:].startswith("Generated Node #0,0")
    assert guided["problem"]["target"] == 15  # from selftrain.split
    assert gen["counts"]["total"] == 2  # the iteration's data.jsonl (kept records) is not read twice
    [eps] = m["episodes"]
    assert eps["items"][0]["turns"][1]["feedback"] == "REPAIRED-FEEDBACK" and eps["items"][0]["problem"] is None
    assert [(g["path"], g["title"]) for g in m["trees"]] == [
        ("compare-search/methods/trees-mcts-star-100.jsonl", "compare-search · mcts-star at 100 tokens"),
        ("compare-search/methods/vm-mcts-100-0123456789ab/trees.jsonl", "compare-search · vm-mcts at 100 tokens")]
    assert m["trees"][0]["items"][0]["nodes"][3] == {"id": 3, "parent": 1, "action": "GRANDCHILD 3-2=1", "value": 0.9,
                                                      "visits": 4, "terminal": False, "reward": None, "chosen": True}
    assert {c["dir"]: c["kind"] for c in m["curves"]} == {"ppo": "rl", "sft": "sft"}
    stages = {s["dir"]: s for s in m["stages"]}
    assert stages["guided-rest"]["iterations"][0]["gen_stats"]["kept"] == 1 and not stages["ppo"]["done"]
    [res] = m["results"]
    assert [b["type"] for b in res["blocks"]] == ["heading", "p", "table", "image"]
    assert res["blocks"][2]["rows"] == [["SoS", "33.3 (0.0..100.0)"]] and res["blocks"][2]["align"] == ["left", "right"]


def test_collect_refuses_what_is_not_a_run(tmp_path, run):
    with pytest.raises(InputError, match="no such run directory"):
        collect(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a run directory"):
        collect(tmp_path / "empty")
    bad = run / "search" / "trees-x-1.jsonl"
    bad.parent.mkdir()
    bad.write_text(json.dumps({"index": 0, "nodes": [{"id": 0, "parent": None}]}) + "\n"
                   + json.dumps({"index": 1, "nodes": [{"id": 0, "parent": None}, {"id": 1, "parent": 7}]}) + "\n")
    with pytest.raises(InputError, match=r"trees-x-1.jsonl:2: field 'nodes\[1\].parent': 7 is not another node"):
        collect(run)
    bad.write_text(json.dumps({"index": 0, "nodes": [{"id": 0, "parent": None, "visits": "many"}]}) + "\n")
    with pytest.raises(InputError, match=r"trees-x-1.jsonl:1: field 'nodes\[0\].visits': expected an integer"):
        collect(run)


def test_markdown_and_titles():
    blocks = parse_markdown("## A\n\ntext `x`\nmore\n\n| a | b |\n|---|---:|\n| 1 | 2 |\n")
    assert blocks == [{"type": "heading", "level": 2, "text": "A"}, {"type": "p", "text": "text `x` more"},
                      {"type": "table", "head": ["a", "b"], "align": ["left", "right"], "rows": [["1", "2"]]}]
    title = group_title("eval/SoS + PPO/samples/test_unseen/greedy-0d675f3a7a70")
    assert title == "eval/SoS + PPO · test_unseen · greedy"
    assert group_title("rest/iter1/gen/bab053de3c5e") == "rest · iter1 · gen"


# ----------------------------------------------------------------------------- the site and the command


def test_view_command_paginates_and_replaces_the_site(run, tmp_path, capsys):
    from searchrl.cli import main

    out = tmp_path / "site"
    assert main(["view", str(run), "--out", str(out), "--page-size", "2"]) == 0
    assert out.joinpath("index.html").as_uri() in capsys.readouterr().out
    assert {p.name for p in out.glob("samples-*.html")} == {
        "samples-001-1.html", "samples-001-2.html", "samples-001-correct-1.html", "samples-001-incorrect-1.html"}
    assert "WRONG-TURN-MARKER" in (out / "samples-001-incorrect-1.html").read_text()
    assert "WRONG-TURN-MARKER" not in (out / "samples-001-correct-1.html").read_text()
    data = out / "samples-001-2.html"
    text = data.read_text()
    assert "<script>window.__pwned" not in text and "\\u003cscript\\u003ewindow.__pwned=1" in text  # escaped
    assert (out / "assets" / "viewer.js").is_file() and len(list((out / "plots").glob("*.png"))) == 1
    assert main(["view", str(run), "--out", str(out)]) == 0  # a new site replaces the old one whole
    assert {p.name for p in out.glob("samples-*.html")} == {
        "samples-001-1.html", "samples-001-correct-1.html", "samples-001-incorrect-1.html"}
    assert not (out / "episodes-001-incorrect-1.html").exists()  # the one episode is correct: no empty page set
    # the default place is <run>/view, and a rerun does not read the site as records
    assert main(["view", str(run)]) == 0 and main(["view", str(run)]) == 0
    assert (run / "view" / "index.html").is_file()
    assert main(["view", str(run), "--out", str(run / "site2")]) == 0  # sites inside the run are not read
    assert [p["path"] for p in collect(run)["plots"]] == ["eval/passk.png"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["view", str(run), "--out", str(other)]) == 2  # not a site the viewer wrote: refused
    assert (other / "notes.txt").read_text() == "mine"
    assert main(["view", str(run), "--page-size", "0"]) == 2


def test_viewer_imports_no_torch(run, tmp_path):
    code = ("import sys; from searchrl.pipelines.view import run_view; "
            f"run_view({str(run)!r}, {str(tmp_path / 's')!r}); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_serve_answers_on_localhost(run, tmp_path):
    from searchrl.pipelines.view import run_view, serve

    index = run_view(run, tmp_path / "site")
    server = serve(index.parent, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        body = urllib.request.urlopen(f"http://{host}:{port}/index.html", timeout=10).read().decode()
        assert "assets/viewer.js" in body
    finally:
        server.shutdown()
        server.server_close()


def test_write_site_refuses_a_bad_page_size(run, tmp_path):
    with pytest.raises(InputError, match="page-size"):
        write_site(collect(run), tmp_path / "s", page_size=0)
