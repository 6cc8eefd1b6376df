"""The ``searchrl`` command. Thin: each subcommand parses its options and calls one function.

Options of a subcommand are the fields of its config dataclass: every flag shows its
default and its help (unit included) in ``--help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any


def _add_dataclass_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_ = f.metadata.get("help", "") + f" (default: {default})"
        if isinstance(default, bool):
            parser.add_argument(flag, dest=f.name, default=default, action=argparse.BooleanOptionalAction, help=help_)
        else:
            parser.add_argument(flag, dest=f.name, default=default, type=type(default), help=help_)


def _dataclass_from_args(cls: type, args: argparse.Namespace) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(args).items() if k in names})


def cmd_countdown_data(args: argparse.Namespace) -> int:
    from .tasks.countdown import CountdownDataConfig, write_splits

    cfg = _dataclass_from_args(CountdownDataConfig, args)
    stats = write_splits(args.out, cfg, progress=not args.quiet)
    run = stats.pop("_run")
    print(f"wrote {args.out}/{{train,valid,test_seen,test_unseen}}.jsonl in {run['seconds']} s "
          f"({run['problems_per_s']} problems/s on {run['workers']} workers)")
    print(f"held-out (unseen) targets: {run['unseen_targets']}")
    for split, s in stats.items():
        line = f"  {split:12s} {s['problems']:7d} problems, {s['targets']:3d} targets"
        if "traces" in s:
            line += (f"; SoS traces: {100 * s['trace_solved']:.1f}% reach the goal, "
                     f"chars mean {s['trace_chars_mean']:.0f} / median {s['trace_chars_median']} / "
                     f"max {s['trace_chars_max']}; strategies {json.dumps(s['strategies'])}")
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .tasks.countdown import CountdownDataConfig

    parser = argparse.ArgumentParser(prog="searchrl", description=__doc__.splitlines()[0]
                                     if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    cd = sub.add_parser("countdown", help="Countdown task: data generation")
    cd_sub = cd.add_subparsers(dest="countdown_command", required=True)
    data = cd_sub.add_parser(
        "data", help="generate train/valid/test_seen/test_unseen splits with Stream-of-Search traces",
        description="Generate Countdown splits (JSONL) with a progress bar, in parallel over the cores. "
                    "10%% of the targets are held out for test_unseen.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data.add_argument("--out", required=True, help="output directory")
    data.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_dataclass_args(data, CountdownDataConfig)
    data.set_defaults(func=cmd_countdown_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted; finished work is kept, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
