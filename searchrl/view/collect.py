"""A run directory read into the viewer's model: what each stage recorded, found by its files.

The viewer knows no command; it recognises the files the commands write (:mod:`searchrl.rundir`
and the stages' own records) wherever they are in the run directory:

* ``config.yaml`` (the recorded config) and every ``stage.json`` (a stage: its name, whether it is
  done, what it depends on), with the ``iterN/done.json`` and ``gen_stats.json`` of self-training
  iterations;
* every ``results.md`` (the tables a command prints; parsed into headings, paragraphs, tables and
  the plots they show) and every ``*.png``;
* JSONL records with a ``response`` and a ``correct`` field: graded samples (evaluation shards,
  search pools, self-training generations; a Guided-ReST response's ``prefix_len`` guided tokens are
  found in its text with the policy's ``tokenizer.json``); those with ``messages`` and ``turns``:
  multi-turn self-repair episodes (:class:`searchrl.episodes.Episode` records);
* ``trees*.jsonl``: search trees (one tree per line: ``index``, ``method``, ``budget``, ``prompt``,
  ``response``, ``correct``, ``generated_tokens`` and ``nodes`` with ``id``, ``parent``, ``action``,
  ``value``, ``visits``, ``terminal``, ``reward``, ``chosen``; node 0 is the root);
* every ``metrics.jsonl`` (SFT, value-model and RL training curves).

Records are grouped by the directory that holds them (one evaluation split and mode, one
iteration's generation, one search result). A sample's problem is looked up in the run's data
(``<data_dir>/<split>.jsonl``, the split from the record or from the config section that made it).
A response that reads as a Stream-of-Search trace also gets the tree it encodes (:mod:`.sos`).

Checkpoint and model directories are not read (only a tokenizer, for the guided prefixes). Bad
records are :class:`searchrl.data.RecordError` naming the file, the line and the field. Nothing here
imports torch.
"""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..data import InputError, RecordError, field_value, iter_jsonl, read_json, read_jsonl_log
from ..rundir import CONFIG_FILE, STAGE_FILE, resolve
from .sos import looks_like_trace, parse_trace

#: directories never read: model checkpoints (weights, optimizer state) and caches
SKIP_DIRS = {"checkpoints", "__pycache__", ".git"}
#: a model directory (its files are not records)
MODEL_FILES = ("model.safetensors", "pytorch_model.bin", "adapter_model.safetensors")
#: longest string shown of a problem's field (the rest is elided, with its length said)
PROBLEM_FIELD_CHARS = 600
_HASH = re.compile(r"^[0-9a-f]{8,}$")
_HASH_SUFFIX = re.compile(r"-[0-9a-f]{12}$")
_IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)]+)\)$")


# ----------------------------------------------------------------------------- walking


def _walk(root: Path, skip: set[Path]) -> list[Path]:
    """Every file under ``root`` in sorted order, without checkpoints, model directories, the viewer's
    own sites and ``skip``."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if any(f in filenames for f in MODEL_FILES):
            dirnames[:] = []
            continue
        dirnames[:] = sorted(n for n in dirnames if n not in SKIP_DIRS and not n.startswith(".")
                             and (d / n).resolve() not in skip
                             and not (d / n / "assets" / "viewer.js").is_file())  # a site the viewer wrote
        out += [d / f for f in sorted(filenames) if not f.startswith(".")]
    return sorted(out, key=lambda p: p.relative_to(root).parts)


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def group_title(rel_dir: str) -> str:
    """A record directory as a heading: key hashes left out (``eval/SoS/samples/test_seen/sampled-7b8d…``
    -> ``eval/SoS · test_seen · sampled``)."""
    parts = [_HASH_SUFFIX.sub("", p) for p in rel_dir.split("/") if p and not _HASH.match(p)]
    if "samples" in parts:  # evaluation shards: <out>/samples/<split>/<mode>
        i = parts.index("samples")
        return " · ".join(["/".join(parts[:i]) or "."] + parts[i + 1:])
    return " · ".join(parts) or "."


# ----------------------------------------------------------------------------- results.md


def parse_markdown(text: str) -> list[dict[str, Any]]:
    """The Markdown the reports write (headings, paragraphs, pipe tables, images) as blocks:
    ``{"type": "heading", "level", "text"}``, ``{"type": "p", "text"}``, ``{"type": "table", "head",
    "align", "rows"}``, ``{"type": "image", "alt", "src"}``. Inline markup stays in the text (the page
    shows backtick spans as code); nothing becomes HTML."""
    blocks: list[dict[str, Any]] = []
    para: list[str] = []
    lines = text.split("\n")

    def flush():
        if para:
            blocks.append({"type": "p", "text": " ".join(para)})
            para.clear()

    def cells(line: str) -> list[str]:
        s = line.strip()
        s = s[1:] if s.startswith("|") else s
        s = s[:-1] if s.endswith("|") else s
        return [c.strip() for c in s.split("|")]

    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            flush()
        elif m := re.match(r"^(#{1,6})\s+(.*)$", line):
            flush()
            blocks.append({"type": "heading", "level": len(m[1]), "text": m[2]})
        elif m := _IMAGE.match(line.strip()):
            flush()
            blocks.append({"type": "image", "alt": m["alt"], "src": m["src"]})
        elif line.lstrip().startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(cells(lines[i]))
                i += 1
            head, align = rows[0], []
            if len(rows) > 1 and all(re.fullmatch(r":?-+:?", c) for c in rows[1] if c):
                align = ["right" if c.endswith(":") and not c.startswith(":") else "left" for c in rows[1]]
                rows = rows[2:]
            else:
                rows = rows[1:]
            blocks.append({"type": "table", "head": head, "align": align, "rows": rows})
            continue
        else:
            para.append(line.strip())
        i += 1
    flush()
    return blocks


# ----------------------------------------------------------------------------- problems and prefixes


class _Problems:
    """Problems of the run's data, by split and index, shown compactly beside their samples."""

    def __init__(self, data_dir: Path):
        self.dir, self.cache = data_dir, {}

    def get(self, split: str | None, index: Any) -> dict | None:
        if not split or not isinstance(index, int) or "/" in split or split.startswith("."):
            return None
        if split not in self.cache:
            path = self.dir / f"{split}.jsonl"
            self.cache[split] = [rec for _, rec in iter_jsonl(path)] if path.is_file() else []
        recs = self.cache[split]
        return compact(recs[index]) if 0 <= index < len(recs) else None


def compact(problem: dict) -> dict:
    """A problem record with every long value elided (``"… 1234 characters"``), so pages stay small."""
    out = {}
    for k, v in problem.items():
        text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
        if len(text) > PROBLEM_FIELD_CHARS:
            v = text[:PROBLEM_FIELD_CHARS] + f"… ({len(text)} characters)"
        out[k] = v
    return out


class _Prefixes:
    """Where a guided response's given prefix ends in its text (Guided-ReST: the first ``prefix_len``
    response tokens were given, not sampled; :mod:`searchrl.rollout`). The record keeps token ids, so
    the prefix is decoded with the policy's ``tokenizer.json`` (the ``tokenizers`` library: no torch);
    the boundary is kept only when the decoded prefix is exactly the start of the response text."""

    def __init__(self):
        self.tokenizers: dict[Path, Any] = {}

    def tokenizer(self, model_dir: Path | None):
        if model_dir is None:
            return None
        path = model_dir / "tokenizer.json"
        if path not in self.tokenizers:
            tok = None
            if path.is_file():
                from tokenizers import Tokenizer

                try:
                    tok = Tokenizer.from_file(str(path))
                except Exception:  # an unreadable tokenizer only costs the highlighting
                    tok = None
            self.tokenizers[path] = tok
        return self.tokenizers[path]

    def chars(self, rec: dict, model_dir: Path | None) -> int | None:
        n, ids, response = rec.get("prefix_len") or 0, rec.get("response_ids"), rec.get("response")
        if not n or not isinstance(ids, list) or not isinstance(response, str):
            return None
        tok = self.tokenizer(model_dir)
        if tok is None:
            return None
        prefix = tok.decode(ids[:n], skip_special_tokens=False)
        return len(prefix) if prefix and response.startswith(prefix) else None


def _policy_dir(run_dir: Path, shard: Path) -> Path | None:
    """The policy that generated a self-training iteration (its ``gen_stats.json``, relative to the
    method directory), for its tokenizer; else the run's SFT model."""
    it = next((p for p in shard.parents if re.fullmatch(r"iter\d+", p.name)), None)
    if it is not None and (it / "gen_stats.json").is_file():
        try:
            policy = read_json(it / "gen_stats.json").get("policy")
        except (OSError, ValueError, AttributeError):
            policy = None
        if isinstance(policy, str) and policy:
            if policy.startswith("builtin:"):  # a model shipped in searchrl/presets
                p = Path(str(resources.files("searchrl") / "presets" / policy.removeprefix("builtin:")))
            else:
                p = Path(os.path.normpath(resolve(it.parent, policy)))
            if (p / "tokenizer.json").is_file():
                return p
    for cand in (run_dir / "sft" / "final",):
        if (cand / "tokenizer.json").is_file():
            return cand
    return None


# ----------------------------------------------------------------------------- records


def _check_sample(rec: dict, path: Path, line: int) -> None:
    field_value(rec, "response", str, path, line)
    field_value(rec, "correct", bool, path, line)
    field_value(rec, "index", int, path, line, required=False)


def _sample_item(rec: dict, problem: dict | None, prefix_chars: int | None) -> dict:
    item = {k: rec.get(k) for k in ("index", "sample", "split", "mode", "response", "correct", "reward",
                                    "finish_reason", "num_tokens", "prefix_len", "meta")}
    if item["num_tokens"] is None and isinstance(rec.get("response_ids"), list):
        item["num_tokens"] = len(rec["response_ids"])
    item["prefix_chars"] = prefix_chars
    item["problem"] = problem
    if looks_like_trace(rec["response"]):
        item["sos"] = parse_trace(rec["response"])
    return item


def _check_episode(rec: dict, path: Path, line: int) -> None:
    messages = field_value(rec, "messages", list, path, line)
    turns = field_value(rec, "turns", list, path, line)
    for k, m in enumerate(messages):
        if not isinstance(m, dict):
            raise RecordError(path, line, f"messages[{k}]", f"expected an object, got {type(m).__name__}")
        field_value(m, "role", str, path, line, field=f"messages[{k}].role")
        field_value(m, "content", str, path, line, field=f"messages[{k}].content")
    for k, t in enumerate(turns):
        if not isinstance(t, dict):
            raise RecordError(path, line, f"turns[{k}]", f"expected an object, got {type(t).__name__}")


def _episode_item(rec: dict, problem: dict | None) -> dict:
    item = {k: rec.get(k) for k in ("index", "sample", "split", "mode", "correct", "reward", "n_turns", "round",
                                    "first_correct", "num_tokens", "messages", "turns", "meta")}
    item["correct"] = bool(rec.get("correct"))
    item["problem"] = problem
    return item


def check_tree(rec: dict, path: Path, line: int) -> dict:
    """A search-tree record (the format in the module doc), checked: every node's ``id`` unique,
    every ``parent`` a node of the tree (``null`` only for the root, node 0)."""
    field_value(rec, "index", int, path, line)
    field_value(rec, "correct", bool, path, line, required=False)
    for name in ("method", "prompt", "response"):
        field_value(rec, name, str, path, line, required=False)
    field_value(rec, "budget", int, path, line, required=False)
    nodes = field_value(rec, "nodes", list, path, line)
    ids = set()
    for k, n in enumerate(nodes):
        if not isinstance(n, dict):
            raise RecordError(path, line, f"nodes[{k}]", f"expected an object, got {type(n).__name__}")
        nid = field_value(n, "id", int, path, line, field=f"nodes[{k}].id")
        if nid in ids:
            raise RecordError(path, line, f"nodes[{k}].id", f"{nid} is the id of an earlier node")
        ids.add(nid)
        field_value(n, "action", str, path, line, required=False, field=f"nodes[{k}].action")
        for name in ("value", "reward"):
            field_value(n, name, (int, float), path, line, required=False, field=f"nodes[{k}].{name}")
        field_value(n, "visits", int, path, line, required=False, field=f"nodes[{k}].visits")
    if 0 not in ids:
        raise RecordError(path, line, "nodes", "no root (node 0)")
    for k, n in enumerate(nodes):
        parent = n.get("parent")
        if n["id"] == 0:
            if parent is not None:
                raise RecordError(path, line, f"nodes[{k}].parent", f"the root (node 0) has parent {parent!r}")
        elif not (isinstance(parent, int) and not isinstance(parent, bool) and parent in ids and parent != n["id"]):
            raise RecordError(path, line, f"nodes[{k}].parent", f"{parent!r} is not another node of this tree")
    item = {k: rec.get(k) for k in ("index", "method", "budget", "prompt", "response", "correct",
                                    "generated_tokens")}
    item["nodes"] = [{"id": n["id"], "parent": n.get("parent"), "action": n.get("action") or "",
                      "value": n.get("value"), "visits": n.get("visits"), "terminal": bool(n.get("terminal")),
                      "reward": n.get("reward"), "chosen": bool(n.get("chosen"))} for n in nodes]
    return item


def _curve(records: list[dict]) -> dict:
    """A metrics log as columns: ``step`` and every numeric key (in first-seen order)."""
    keys: list[str] = []
    for r in records:
        for k, v in r.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and k not in keys:
                keys.append(k)
    steps = [r.get("step", i) for i, r in enumerate(records)]
    series = {k: [r.get(k) if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool) else None
                  for r in records] for k in keys}
    return {"steps": steps, "series": series}


# ----------------------------------------------------------------------------- the run


def _stage_name(run_dir: Path, d: Path) -> str | None:
    for p in (d, *d.parents):
        if p == run_dir.parent:
            break
        if (p / STAGE_FILE).is_file():
            try:
                return read_json(p / STAGE_FILE).get("stage")
            except (OSError, ValueError, AttributeError):
                return None
    return None


def curve_kind(stage: str | None, rel: str, series: dict) -> str:
    """``rl``, ``sft``, ``value`` or ``other``: which training a metrics log is from (the stage's name,
    else the directory, else the losses it logs)."""
    text = f"{stage or ''} {rel}".lower()
    if any(k.startswith(("reward/", "actor/")) for k in series) or re.search(r"\b(ppo|grpo|dapo|rl)\b", text):
        return "rl"
    if "value" in text or any(k.startswith("losses/value") for k in series):
        return "value"
    if "sft" in text or "losses/sft" in series:
        return "sft"
    return "other"


def collect(run_dir: str | os.PathLike, exclude: str | os.PathLike | None = None) -> dict[str, Any]:
    """The viewer's model of ``run_dir`` (see the module doc); ``exclude``: a directory not to read
    (the site itself when it is written inside the run directory)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise InputError(f"{root}: no such run directory")
    config_path = root / CONFIG_FILE
    if not config_path.is_file():
        raise InputError(f"{root}: not a run directory (no {CONFIG_FILE}; every searchrl command records one)")
    config_text = config_path.read_text(encoding="utf-8")
    try:
        config = yaml.safe_load(config_text) or {}
    except yaml.YAMLError as e:
        raise InputError(f"{config_path}: unreadable recorded config ({str(e).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise InputError(f"{config_path}: the recorded config is not a mapping of settings")
    data_dir = Path(config["data_dir"]) if config.get("data_dir") else root / "data"
    skip = {Path(exclude).resolve()} if exclude is not None else set()
    files = _walk(root, skip)
    problems, prefixes = _Problems(data_dir), _Prefixes()

    def section_split(rel_dir: str) -> str | None:  # the split a record without one was sampled from
        section = "search" if rel_dir.startswith(("compare-search", "search")) else (
            "selftrain" if "/gen/" in f"/{rel_dir}/" else None)
        value = (config.get(section) or {}).get("split") if section else None
        return value if isinstance(value, str) else None

    stages, iterations, results, plots, curves = [], [], [], [], []
    groups: dict[str, dict[str, dict]] = {"samples": {}, "selftrain": {}, "episodes": {}, "trees": {}}
    data_resolved = data_dir.resolve()
    for path in files:
        rel, rel_dir = _rel(root, path), _rel(root, path.parent) if path.parent != root else "."
        name = path.name
        if name == STAGE_FILE:
            rec = read_json(path)
            if isinstance(rec, dict):
                stages.append({"dir": rel_dir, "stage": rec.get("stage"), "done": bool(rec.get("done")),
                               "depends": rec.get("depends"), "iterations": []})
        elif name == "done.json" and re.fullmatch(r"iter\d+", path.parent.name):
            rec = {"dir": rel_dir, "done": read_json(path)}
            if (path.parent / "gen_stats.json").is_file():
                rec["gen_stats"] = read_json(path.parent / "gen_stats.json")
            iterations.append(rec)
        elif name == "results.md":
            results.append({"path": rel, "dir": rel_dir, "blocks": parse_markdown(path.read_text(encoding="utf-8"))})
        elif name.endswith(".png"):
            plots.append({"path": rel, "file": path})
        elif name == "metrics.jsonl":
            c = _curve(read_jsonl_log(path))
            stage = _stage_name(root, path.parent)
            curves.append({"path": rel, "dir": rel_dir, "stage": stage,
                           "kind": curve_kind(stage, rel_dir, c["series"]), **c})
        elif name.endswith(".jsonl") and name.startswith("trees"):
            g = groups["trees"].setdefault(rel, {"title": group_title(rel.removesuffix(".jsonl")), "path": rel,
                                                 "items": []})
            g["items"] += [check_tree(rec, path, line) for line, rec in iter_jsonl(path)]
        elif name.endswith(".jsonl") and path.parent.resolve() != data_resolved:
            if name == "data.jsonl" and (path.parent / "gen").is_dir():
                continue  # the kept records of an iteration: the generation shards hold them all
            first = next(iter_jsonl(path), None)
            if first is None:
                continue
            _, rec0 = first
            if isinstance(rec0.get("messages"), list) and isinstance(rec0.get("turns"), list):
                g = groups["episodes"].setdefault(rel_dir, {"title": group_title(rel_dir), "path": rel_dir,
                                                            "items": []})
                for line, rec in iter_jsonl(path):
                    _check_episode(rec, path, line)
                    g["items"].append(_episode_item(rec, problems.get(rec.get("split") or section_split(rel_dir),
                                                                      rec.get("index"))))
            elif isinstance(rec0.get("response"), str) and "correct" in rec0:
                section = "selftrain" if "/gen/" in f"/{rel_dir}/" else "samples"
                g = groups[section].setdefault(rel_dir, {"title": group_title(rel_dir), "path": rel_dir,
                                                         "items": []})
                policy = _policy_dir(root, path) if section == "selftrain" else None
                for line, rec in iter_jsonl(path):
                    _check_sample(rec, path, line)
                    problem = problems.get(rec.get("split") or section_split(rel_dir), rec.get("index"))
                    g["items"].append(_sample_item(rec, problem, prefixes.chars(rec, policy)))
    for rec in iterations:  # each iteration under the stage whose directory holds it
        owner = max((s for s in stages if rec["dir"].startswith(s["dir"] + "/")), key=lambda s: len(s["dir"]),
                    default=None)
        if owner is not None:
            owner["iterations"].append(rec)
    timings = read_json(root / "timings.json") if (root / "timings.json").is_file() else None
    out_groups = {}
    for g in groups["trees"].values():  # a file of one method at one budget is named by them
        kinds = {(it.get("method"), it.get("budget")) for it in g["items"]}
        if len(kinds) == 1 and None not in next(iter(kinds)):
            method, budget = next(iter(kinds))
            where = g["path"].split("/methods/")[0] if "/methods/" in g["path"] else group_title(
                str(Path(g["path"]).parent.as_posix()))
            g["title"], g["sort"] = f"{where} · {method} at {budget} tokens", (where, method, budget)
    groups["trees"] = dict(sorted(groups["trees"].items(), key=lambda kv: kv[1].get("sort", (kv[0], "", 0))))
    for section, gs in groups.items():
        out = []
        for g in gs.values():
            g.pop("sort", None)
            items = g["items"]
            g["counts"] = {"total": len(items), "correct": sum(1 for it in items if it.get("correct"))}
            out.append(g)
        out_groups[section] = out
    return {"run": {"name": root.resolve().name, "path": str(root.resolve()), "config_text": config_text,
                    "task": (config.get("task") or {}).get("name") if isinstance(config.get("task"), dict) else None,
                    "timings": timings},
            "stages": stages, "results": results, "plots": plots, "curves": curves, **out_groups}


__all__ = ["collect", "parse_markdown", "check_tree", "group_title", "compact", "curve_kind"]
