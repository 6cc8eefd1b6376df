"""The helper process of :mod:`searchrl.tasks.math.answer`: reads ``[pred, gold]`` JSON lines on stdin,
writes ``1`` (equivalent by math-verify) or ``0`` per line on stdout. It first imports math-verify and
answers one pair, then writes ``ready``: the start-up (seconds on a loaded machine) is not charged to
the first answer's timeout."""

from __future__ import annotations

import json
import sys


def main() -> int:
    from searchrl.tasks.math.answer import check

    check("1/2", "0.5")  # imports math-verify and sympy
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        try:
            pred, gold = json.loads(line)
            ok = isinstance(pred, str) and isinstance(gold, str) and check(pred, gold)
        except Exception:  # noqa: BLE001 - a malformed request is not equivalent
            ok = False
        sys.stdout.write("1\n" if ok else "0\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
