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


def _load(args: argparse.Namespace):
    from .config import load_config
    from .runs import prepare_run_dir

    overrides = list(args.overrides)
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    cfg = load_config(args.config, overrides)
    prepare_run_dir(cfg, force=args.force_config)
    return cfg


def cmd_sft(args: argparse.Namespace) -> int:
    from .runs import run_sft

    cfg = _load(args)
    final = run_sft(cfg, progress=not args.quiet)
    print(f"model: {final}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .runs import run_eval

    cfg = _load(args)
    results = run_eval(cfg, args.model, progress=not args.quiet)
    out = f"{cfg.run_dir}/eval"
    print(open(f"{out}/results.md", encoding="utf-8").read())
    print(f"results: {out}/results.json ({results['meta']['seconds']} s)")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .runs import run_generate

    cfg = _load(args)
    out = run_generate(cfg, args.split, args.model, args.n, args.temperature, progress=not args.quiet)
    print(open(f"{out}/{args.split}-{'greedy' if args.temperature == 0 else 'sampled'}-summary.json").read())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .runs import prepare_run_dir
    from .selftrain.demo import load_demo_config, run_demo

    overrides = list(args.overrides) + ([f"run_dir={args.run_dir}"] if args.run_dir else [])
    cfg = load_demo_config(args.preset, args.config, overrides)
    prepare_run_dir(cfg, force=args.force_config)
    run_demo(cfg, progress=not args.quiet)
    print(open(f"{cfg.run_dir}/results.md", encoding="utf-8").read())
    return 0


def _config_help() -> str:
    from .config import Config

    lines = ["config keys (set in the recipe or as key=value overrides):"]

    def walk(obj, prefix):
        for f in dataclasses.fields(obj):
            if f.name == "output_dir":  # set by the command inside the run directory
                continue
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, prefix + f.name + ".")
                continue
            lines.append(f"  {prefix}{f.name} = {value!r}: {f.metadata.get('help', '')}")

    walk(Config(), "")
    return "\n".join(lines)


def _run_parser(sub, name: str, help_: str, func) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=help_, epilog=_config_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="recipe YAML (e.g. recipes/countdown/sos-tiny.yaml)")
    p.add_argument("--run-dir", help="run directory (same as run_dir=...)")
    p.add_argument("--force-config", action="store_true",
                   help="reuse a run directory even though its recorded config differs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. sft.lr=3e-4")
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    from .selftrain.demo import PRESETS as DEMO_PRESETS
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

    _run_parser(sub, "sft", "train the Stream-of-Search base model on the run's training traces "
                "(resumes from the last checkpoint)", cmd_sft)
    demo = _run_parser(sub, "demo", "the whole Countdown comparison: data, SoS base, ReST, Guided-ReST, "
                       "evaluation, table and plots (resumable)", cmd_demo)
    demo.add_argument("--preset", default="default", choices=DEMO_PRESETS,
                      help="default: the real comparison; smoke: minuscule settings, about two minutes")
    ev = _run_parser(sub, "eval", "greedy and sampled pass@k on the test splits; writes results.json, "
                     "results.md and PNG plots into <run_dir>/eval", cmd_eval)
    ev.add_argument("--model", help="checkpoint directory (default: <run_dir>/sft/final)")
    gen = _run_parser(sub, "generate", "sample graded completions for one split into <run_dir>/generate", cmd_generate)
    gen.add_argument("--model", help="checkpoint directory (default: <run_dir>/sft/final)")
    gen.add_argument("--split", default="valid", help="split to sample (default: valid)")
    gen.add_argument("--n", type=int, default=1, help="completions per problem (default: 1)")
    gen.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default: 1.0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .config import ConfigError
    from .data import RecordError
    from .runs import RunDirError
    from .tasks.countdown.dataset import ProblemSpaceExhausted

    try:
        return args.func(args)
    except (ConfigError, RecordError, RunDirError, ProblemSpaceExhausted, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
