"""A Stream-of-Search trace read back into the search tree it writes out (for the run viewer).

A Countdown SoS trace (Gandhi et al. 2024, "Stream of Search", Sec. 3; the writers are
:mod:`searchrl.tasks.countdown.traces`) is a depth- or breadth-first search serialised one
operation per line::

    Current State: 42:[86, 43, 44], Operations: []          the node being expanded
    Exploring Operation: 86-44=42, Resulting Numbers: [43, 42]   a child is tried
    Generated Node #0,0: 42:[43, 42] Operation: 86-44=42      ... and kept as node 0,0
    42,42 equal: Goal Reached                                  ... or it is a solved leaf
    1,42 unequal: No Solution                                  ... or a dead leaf
    Moving to Node #0,0                                        the search moves (or backtracks)
    Exited                                                     a BFS that ran out of nodes

:func:`parse_trace` rebuilds the tree: a node per explored child (named nodes keep their
``#0,1,2`` name, the parent being the name without its last part), visits counted from the
``Moving to Node`` lines, the path from the root to the first ``Goal Reached`` leaf marked as
chosen. Model text is not trusted to follow the format: a line that is not one of the above is
counted (``unparsed``) and kept as a note on the node the search was at, a move to a node never
generated makes that node (``status`` ``"unknown"``) under its named parent if there is one, else
under the root. It imports nothing (the viewer must stay torch-free) and never evaluates the text.

The nodes have the fields of the viewer's search trees (``id``, ``parent``, ``action``, ``value``,
``visits``, ``terminal``, ``reward``, ``chosen``) plus ``name`` (the trace's node name),
``state`` (the numbers left), ``status`` (``root``, ``explored``, ``generated``, ``visited``,
``goal``, ``dead``, ``unknown``) and ``line`` (1-based line of the trace that made it).
"""

from __future__ import annotations

import re
from typing import Any

_NUMS = r"\[[^\]\n]*\]"
_STATE = re.compile(rf"^Current State: (?P<target>-?\d+):(?P<nums>{_NUMS}), Operations: (?P<ops>\[.*\])$")
_EXPLORE = re.compile(rf"^Exploring Operation: (?P<op>.+?), Resulting Numbers: (?P<nums>{_NUMS})$")
_GENERATED = re.compile(rf"^Generated Node #(?P<name>\d+(?:,\d+)*): (?P<target>-?\d+):(?P<nums>{_NUMS}) "
                        rf"Operation: (?P<op>.+)$")
_MOVE = re.compile(r"^Moving to Node #(?P<name>\d+(?:,\d+)*)$")
# a leaf line may have text run on after it (a model that did not stop, a guided prefix that ends there)
_GOAL = re.compile(r"^(?P<a>-?\d+),(?P<b>-?\d+) equal: Goal Reached")
_DEAD = re.compile(r"^(?P<a>-?\d+),(?P<b>-?\d+) unequal: No Solution")

#: notes kept per node (a garbled response can have hundreds of unparsed lines)
MAX_NOTES = 5


def _node(nodes: list[dict], parent: int | None, action: str, state: str | None, status: str, line: int,
          name: str | None = None) -> dict:
    node = {"id": len(nodes), "parent": parent, "action": action, "value": None, "visits": 0, "terminal": False,
            "reward": None, "chosen": False, "name": name, "state": state, "status": status, "line": line}
    nodes.append(node)
    return node


def _note(node: dict, lineno: int, text: str) -> None:
    notes = node.setdefault("notes", [])
    if len(notes) < MAX_NOTES:
        notes.append(f"line {lineno}: {text[:200]}")


def looks_like_trace(text: str) -> bool:
    """Whether ``text`` has at least one line of the SoS format (a ``Current State`` or an
    ``Exploring Operation`` line): only such responses are drawn as trees."""
    return any(_STATE.match(line) or _EXPLORE.match(line) for line in text.splitlines())


def parse_trace(text: str) -> dict[str, Any]:
    """The search tree a SoS trace writes out (see the module doc).

    Returns ``{"nodes": [...], "goal": id | None, "unparsed": n, "lines": n}``; node 0 is the
    root (the first ``Current State``), ``goal`` the first leaf that reached the target.
    """
    nodes: list[dict] = []
    root = _node(nodes, None, "start", None, "root", 0, name="0")
    root["visits"] = 1
    by_name: dict[str, dict] = {"0": root}
    current, pending = root, None  # the node the search is at; the child explored last, not yet resolved
    goal: dict | None = None
    unparsed = n_lines = 0
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        n_lines += 1
        if m := _STATE.match(line):
            if current["state"] is None:
                current["state"] = m["nums"]
                if current is root:
                    root["line"] = lineno
            pending = None
        elif m := _EXPLORE.match(line):
            pending = _node(nodes, current["id"], m["op"], m["nums"], "explored", lineno)
        elif m := _GENERATED.match(line):
            name = m["name"]
            if pending is not None and pending["action"] == m["op"] and pending["name"] is None:
                node = pending
            else:  # no matching "Exploring" line just before: the node hangs under its named parent
                parent = by_name.get(name.rsplit(",", 1)[0], current) if "," in name else current
                node = _node(nodes, parent["id"], m["op"], m["nums"], "explored", lineno)
            node["name"], node["status"] = name, "generated"
            by_name.setdefault(name, node)
            pending = None
        elif m := _MOVE.match(line):
            name = m["name"]
            node = by_name.get(name)
            if node is None:
                parent = by_name.get(name.rsplit(",", 1)[0], root) if "," in name else root
                node = _node(nodes, parent["id"], f"(node #{name}, never generated)", None, "unknown", lineno,
                             name=name)
                by_name[name] = node
            node["visits"] += 1
            if node["status"] in ("generated", "explored"):
                node["status"] = "visited"
            current, pending = node, None
        elif (m := _GOAL.match(line)) or (m := _DEAD.match(line)):
            reached = m.re is _GOAL
            leaf = pending if pending is not None else _node(nodes, current["id"], "(no operation)", None,
                                                              "explored", lineno)
            leaf["terminal"], leaf["status"] = True, ("goal" if reached else "dead")
            leaf["reward"] = 1.0 if reached else 0.0
            if reached and goal is None:
                goal = leaf
            pending = None
            if line[m.end():].strip():  # text run on after the leaf line
                unparsed += 1
                _note(current, lineno, line[m.end():])
        elif line.strip() == "Exited":
            pending = None
        else:
            unparsed += 1
            _note(current, lineno, line)
    if goal is not None:
        node: dict | None = goal
        while node is not None:
            node["chosen"] = True
            node = nodes[node["parent"]] if node["parent"] is not None else None
    return {"nodes": nodes, "goal": goal["id"] if goal is not None else None, "unparsed": unparsed,
            "lines": n_lines}


__all__ = ["parse_trace", "looks_like_trace"]
