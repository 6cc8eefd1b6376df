"""The ``searchrl`` command. Thin: each subcommand builds a config and calls one pipeline function.

Every setting is a field of the config dataclasses, set in a recipe (``--config``) or as a
``key=value`` override; ``searchrl <command> --help`` lists, with their defaults, the sections that
command reads (:data:`COMMAND_SECTIONS`) and the ``task.*`` of the task the command line selects,
``--help-all`` every setting (computed only when asked, so ``searchrl --help`` imports no torch).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

DESCRIPTION = ("Teach language models to search, and improve them with their own searches: "
               "Stream-of-Search training, ReST and Guided-ReST self-training, pass@k evaluation, value models "
               "and test-time search (best-of-N and votes, VM-MCTS, MCTS*, VGS beam search and DVTS), RL (operation-level "
               "PPO, GRPO, DAPO, ReST-GRPO), code self-repair episodes, and ReST-MCTS* self-training on math.")


class _LazyEpilogParser(argparse.ArgumentParser):
    """An argument parser whose epilog (the settings list) is built only when help is shown.

    ``epilog_fn(parser)`` builds it; ``help_all`` (set by ``--help-all``) asks for every setting,
    and ``help_argv`` (set by :func:`parse_args`) is the command line, whose ``--config`` and
    ``task.name=`` pick the task whose settings are shown."""

    def __init__(self, *args, epilog_fn=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._epilog_fn = epilog_fn
        self.help_all = False
        self.help_argv: list[str] = []

    def format_help(self) -> str:
        if self._epilog_fn is not None:
            self.epilog = self._epilog_fn(self)
        return super().format_help()


class _HelpAll(argparse.Action):
    """``--help-all``: the help with every setting of every section, then exit."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.help_all = True
        parser.print_help()
        parser.exit()


# The config sections each command reads (what its pipeline functions in pipelines/*.py read), beside
# the top-level settings (run_dir, seed, data_dir, base_model) and the selected task's task.*:
# `searchrl CMD --help` lists only these, `--help-all` every setting. A dotted entry is one subsection.
# A command not named here lists every setting.
COMMAND_SECTIONS: dict[str, tuple[str, ...]] = {
    "data": (),
    "export-verl": (),
    "export-value": (),
    "sft": ("model", "sft", "tracking"),
    "eval": ("model", "engine", "eval", "tracking"),
    "generate": ("model", "engine", "eval"),
    "value-data": ("model", "engine", "value_data", "search"),
    "train-value": ("model", "value", "tracking"),
    "search": ("model", "engine", "search", "tracking"),
    "compare-search": ("model", "engine", "search", "value_data", "value", "tracking"),
    "ppo": ("model", "engine", "ppo", "eval", "tracking"),
    "grpo": ("model", "engine", "grpo", "eval", "tracking"),
    "selftrain": ("model", "engine", "selftrain", "rest_sft", "eval", "tracking"),
    "rest-mcts": ("model", "engine", "rest_mcts", "search.mcts_star", "rest_sft", "value", "eval", "tracking"),
    "rest-grpo": ("model", "engine", "rest_grpo", "grpo", "dpo", "eval", "tracking"),
    "demo": ("model", "engine", "demo", "sft", "selftrain", "rest_sft", "ppo", "eval", "tracking"),
}
_TOP_LEVEL = ("run_dir", "seed", "data_dir", "base_model")


#: the section whose settings a command's --help explains one by one (the rest: one compact block each)
COMMAND_FOCUS: dict[str, str] = {"data": "task", "sft": "sft", "eval": "eval", "generate": "eval",
                                 "value-data": "value_data", "train-value": "value", "search": "search",
                                 "compare-search": "search", "ppo": "ppo", "grpo": "grpo", "selftrain": "selftrain",
                                 "rest-mcts": "rest_mcts", "rest-grpo": "rest_grpo", "demo": "demo"}


def _config_help(cfg=None, title: str = "settings (set in a recipe or as key=value overrides; default shown)",
                 sections: tuple[str, ...] | None = None, top_level: bool = True, focus: str = "") -> str:
    """The settings of ``cfg`` (default: the defaults). ``sections`` None: every setting, one line each
    (``key = default: help``). Else only the top-level settings (unless ``top_level`` is false), ``task.*``
    and these sections: the ``focus`` section's own settings one line each with their help, every other
    section (and the focus section's subsections) as one compact block of ``key=default``."""
    import textwrap

    from .config import Config

    cfg = cfg if cfg is not None else Config()
    lines = [title + ":"]

    def walk(obj, prefix):
        for f in dataclasses.fields(obj):
            if f.name == "output_dir":  # set by the command inside the run directory
                continue
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, prefix + f.name + ".")
                continue
            lines.append(f"  {prefix}{f.name} = {value!r}: {f.metadata.get('help', '')}")

    def compact(obj, name):
        plain = [f"{f.name}={getattr(obj, f.name)!r}" for f in dataclasses.fields(obj)
                 if f.name != "output_dir" and not dataclasses.is_dataclass(getattr(obj, f.name))]
        if plain:
            lines.extend(textwrap.wrap(f"{name}.*: " + ", ".join(plain), width=110, initial_indent="  ",
                                       subsequent_indent="      ", break_on_hyphens=False))
        for f in dataclasses.fields(obj):
            if dataclasses.is_dataclass(getattr(obj, f.name)):
                compact(getattr(obj, f.name), f"{name}.{f.name}")

    if sections is None:
        walk(cfg, "")
        return "\n".join(lines)
    for f in dataclasses.fields(cfg):
        if top_level and f.name in _TOP_LEVEL:
            lines.append(f"  {f.name} = {getattr(cfg, f.name)!r}: {f.metadata.get('help', '')}")
    for section in ("task", *sections):
        obj = cfg
        for part in section.split("."):
            obj = getattr(obj, part)
        if section != focus:
            compact(obj, section)
            continue
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name == "output_dir":
                continue
            if dataclasses.is_dataclass(value):
                compact(value, f"{section}.{f.name}")
            else:
                lines.append(f"  {section}.{f.name} = {value!r}: {f.metadata.get('help', '')}")
    lines.append("  (a block lists its section's key=default; --help-all explains every setting)")
    return "\n".join(lines)


def _help_task(argv: list[str]) -> str | None:
    """The task a command line selects, for its help: the last ``task.name=`` override, else the
    ``--config`` recipe's ``task.name``; None when neither names one (or the recipe does not load)."""
    for arg in reversed(argv):
        if arg.startswith("task.name="):
            return arg.split("=", 1)[1]
    recipe = None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            recipe = argv[i + 1]
        elif arg.startswith("--config="):
            recipe = arg.split("=", 1)[1]
    if recipe is None:
        return None
    from .config import ConfigError, read_recipe

    try:
        task = read_recipe(recipe).data.get("task")
    except (ConfigError, OSError):
        return None
    return str(task["name"]) if isinstance(task, dict) and task.get("name") is not None else None


def _help_config(argv: list[str]):
    """Default settings with the task the command line selects (its own defaults under task.*)."""
    from .config import Config, ConfigError, load_config

    name = _help_task(argv)
    if name is not None:
        try:
            return load_config(None, [f"task.name={name}"])
        except ConfigError:  # an unknown task name: the command itself says so
            pass
    return Config()


def _command_help(parser: "_LazyEpilogParser") -> str:
    """A command's settings: the sections it reads (COMMAND_SECTIONS), every one with --help-all."""
    command = parser.prog.split()[-1]
    cfg = _help_config(parser.help_argv)
    if parser.help_all or command not in COMMAND_SECTIONS:
        return _config_help(cfg)
    return _config_help(cfg, f"settings this command reads (task {cfg.task.name}; set in a recipe or as key=value; "
                             f"default shown; --help-all lists every setting)", COMMAND_SECTIONS[command],
                        focus=COMMAND_FOCUS.get(command, ""))


def _demo_help(parser: "_LazyEpilogParser") -> str:
    from .pipelines.demo import load_demo_config

    title = ("settings of the default preset (--preset smoke overrides some; set any in a recipe or as key=value"
             + ("" if parser.help_all else "; --help-all lists every setting") + ")")
    return _config_help(load_demo_config("default", None, []), title,
                        None if parser.help_all else COMMAND_SECTIONS["demo"], focus="demo")


def _task_help(parser: "_LazyEpilogParser") -> str:
    cfg = _help_config(parser.help_argv)
    return _config_help(cfg, f"task settings (task {cfg.task.name}; task.KEY=value; default shown)",
                        None if parser.help_all else COMMAND_SECTIONS["data"], top_level=False, focus="task")


# ----------------------------------------------------------------------------- commands


def _run(args: argparse.Namespace, sampling: bool = False, value_models=lambda cfg: {}):
    """The command's run, opened: settings, stages and models checked before anything is recorded.

    ``sampling``: the command samples ``--model`` (default: the run's base policy);
    ``value_models(cfg)``: the value models it will load (setting -> directory; empty ones are unset). A command with ``--preset NAME`` starts
    from ``searchrl/presets/search-NAME.yaml``, then ``--config``. The run is kept in ``args`` so
    that :func:`main` can take back its config record if the command fails.
    """
    from .pipelines.run import Run, config_for_run_dir

    recipes = [args.config] if args.config else []
    if getattr(args, "preset", None):
        from importlib import resources

        recipes.insert(0, str(resources.files("searchrl") / "presets" / f"search-{args.preset}.yaml"))
    cfg = config_for_run_dir(args.run_dir, recipes, args.overrides)
    run = Run(cfg, progress=not args.quiet)
    values = {k: v for k, v in value_models(cfg).items() if v}
    if sampling:
        args.opened = run.open(value_models=values, samples=True, policy=args.model)
    else:
        args.opened = run.open(models=[cfg.model.name], value_models=values)
    return args.opened


def _positive(args: argparse.Namespace, **bounds: int) -> None:
    """Refuse a command-line option below its bound (``--budget 0``), before anything is written: the
    settings' own check (:func:`searchrl.settings.at_least`), named as the option."""
    from .data import InputError
    from .settings import SettingError, at_least

    try:
        at_least(args, **bounds)
    except SettingError as e:
        raise InputError(f"--{e.key.replace('_', '-')} {e.value}: {e.allowed}") from None


def _search_values(cfg) -> dict[str, str]:
    return {f"search.{k}": getattr(cfg.search, k) for k in ("value", "orm", "prm", "classifier", "mcts_star_value")}


def cmd_data(args: argparse.Namespace) -> int:
    from .config import load_config
    from .pipelines.commands import run_data

    cfg = load_config([args.config] if args.config else [], args.overrides)
    summary = run_data(cfg.task, args.out, progress=not args.quiet)
    if summary is None:
        print(f"{args.out}: already prepared; nothing to do")
        return 0
    print(f"wrote {args.out}")
    for key, value in summary.items():
        if isinstance(value, dict):  # per split
            value = ", ".join(f"{k} {round(v, 3) if isinstance(v, float) else v}"
                              for k, v in value.items() if not isinstance(v, dict))
        print(f"  {key}: {value}")
    return 0


def cmd_sft(args: argparse.Namespace) -> int:
    from .pipelines.commands import run_sft

    final = run_sft(_run(args))
    print(f"model: {final}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .pipelines.commands import run_eval

    run = _run(args, sampling=True)
    # a recipe's eval.method names the run's base policy ("SFT base"); another --model is named by its
    # path unless eval.method= is on the command line
    named = any(o.split("=", 1)[0].strip() == "eval.method" for o in args.overrides)
    results = run_eval(run, args.model, by_path=bool(args.model) and not named)
    out = run.dir / "eval"
    print((out / "results.md").read_text(encoding="utf-8"))
    print(f"results: {out}/results.json ({results['meta']['seconds']} s)")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .pipelines.commands import run_generate

    _positive(args, n=1, temperature=0)
    out = run_generate(_run(args, sampling=True), args.split, args.model, args.n, args.temperature)
    mode = "greedy" if args.temperature == 0 else "sampled"
    print((out / f"{args.split}-{mode}-summary.json").read_text(encoding="utf-8"))
    return 0


def cmd_value_data(args: argparse.Namespace) -> int:
    from .pipelines.value import check_value_source, make_value_data

    check_value_source(args.source, args.value)
    run = _run(args, sampling=True, value_models=lambda cfg: {"--value": args.value})
    out, records = make_value_data(run, args.source, args.model, args.value)
    print((out / "summary.json").read_text(encoding="utf-8"))
    print(f"value data: {out} ({len(records)} records)")
    return 0


def cmd_train_value(args: argparse.Namespace) -> int:
    from .pipelines.value import run_train_value, value_data_files

    value_data_files(args.data)  # missing or empty value data: refused before anything is recorded
    run = _run(args, sampling=True)
    final = run_train_value(run, args.kind, args.data, args.model, args.name)
    print(f"value model: {final}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .pipelines.search import resolve_method, run_search

    resolve_method(args.method)
    _positive(args, budget=1)
    run = _run(args, sampling=True, value_models=_search_values)
    row = run_search(run, args.method, args.budget, args.model)
    print(f"{row['label']} at {row['budget_tokens']} tokens per problem on {run.cfg.search.split} "
          f"({row['n_problems']} problems): accuracy {100 * row['accuracy']:.1f}% "
          f"(95% CI {100 * row['ci_low']:.1f}..{100 * row['ci_high']:.1f}), {row['generated_tokens']:.0f} generated "
          f"and {row['value_tokens']:.0f} value-model tokens per problem ({row['seconds']} s)")
    return 0


def cmd_compare_search(args: argparse.Namespace) -> int:
    from .pipelines.search import run_compare_search

    run = _run(args, sampling=True, value_models=_search_values)
    run_compare_search(run, args.model)
    out = run.dir / "compare-search"
    print((out / "results.md").read_text(encoding="utf-8"))
    print(f"results: {out}/results.json, {out}/accuracy_vs_tokens.png")
    return 0


def cmd_rl(args: argparse.Namespace) -> int:
    from .pipelines.rl import run_rl

    run = _run(args, sampling=True)
    final = run_rl(run, args.command, args.model, args.name)
    if args.eval:
        from .pipelines.commands import run_eval

        run_eval(run, final, out_name=f"{final.parent.name}-eval")
        print((run.dir / f"{final.parent.name}-eval" / "results.md").read_text(encoding="utf-8"))
    print(f"{args.command} policy: {final} (critic in {final}/critic)" if args.command == "ppo"
          else f"{args.command} policy: {final}")
    print(f"training curves: {final.parent / 'curves.png'}; metrics: {final.parent / 'metrics.jsonl'}")
    return 0


def cmd_rest_grpo(args: argparse.Namespace) -> int:
    from .pipelines.selftrain import run_rest_grpo_command

    run = _run(args, sampling=True)
    final = run_rest_grpo_command(run, args.model, args.name)
    name = args.name or run.cfg.rest_grpo.method
    if args.eval:
        from .pipelines.commands import run_eval

        run_eval(run, final, out_name=f"{name}-eval")
        print((run.dir / f"{name}-eval" / "results.md").read_text(encoding="utf-8"))
    print(f"{run.cfg.rest_grpo.method} policy: {final}")
    if run.cfg.rest_grpo.method != "rest-dpo":
        print(f"reward std of the groups over training: {run.dir / name / 'reward_std.png'}")
    return 0


def cmd_selftrain(args: argparse.Namespace) -> int:
    from .pipelines.selftrain import run_selftrain_command, selftrain_name, selftrain_stats

    run = _run(args, sampling=True)
    name = selftrain_name(run, args.name)
    final = run_selftrain_command(run, args.model, name)
    for it, st in enumerate(selftrain_stats(run, name), 1):
        print(f"iteration {it}: kept {st['kept']} of {st['problems']} (solved by round: {st['solved_by_round']})")
    if args.eval:
        from .pipelines.commands import run_eval

        label = {"rest": "ReST", "guided-rest": "Guided-ReST"}.get(name, name)
        run_eval(run, final, out_name=f"{name}-eval", method=label)
        print((run.dir / f"{name}-eval" / "results.md").read_text(encoding="utf-8"))
    print(f"{name} policy: {final}")
    return 0


def cmd_rest_mcts(args: argparse.Namespace) -> int:
    from .pipelines.selftrain import rest_mcts_iterations, run_rest_mcts_command

    run = _run(args, sampling=True, value_models=lambda cfg: {"rest_mcts.value_init": cfg.rest_mcts.value_init})
    name = args.name or "rest-mcts"
    made = run_rest_mcts_command(run, args.model, name)
    for it, rec in enumerate(rest_mcts_iterations(run, name), 1):
        print(f"iteration {it}: solved {rec['solved']} of {rec['questions']} questions, {rec['policy_examples']} "
              f"policy examples, {rec['value_records']} value targets")
    if args.eval and run.cfg.rest_mcts.iterations:
        from .pipelines.commands import run_eval

        run_eval(run, made["policy"], out_name=f"{name}-eval", method="ReST-MCTS*" if name == "rest-mcts" else name)
        print((run.dir / f"{name}-eval" / "results.md").read_text(encoding="utf-8"))
    if run.cfg.rest_mcts.iterations == 0:
        print(f"rest-mcts: rest_mcts.iterations=0, so only the initial value model V0 was trained: {made['value']}")
    else:
        print(f"rest-mcts: last iteration in {made['last']}; policy {made['policy']}, value model {made['value']}")
    return 0


def cmd_export_verl(args: argparse.Namespace) -> int:
    from .pipelines.commands import run_export_verl

    _positive(args, n=0)
    run = _run(args)
    out, rows = run_export_verl(run, args.split, args.out, args.n)
    print(f"{out}: {rows} rows of {run.task.name}/{args.split}; "
          f"reward: custom_reward_function.path=<searchrl>/tasks/verl.py custom_reward_function.name=compute_score")
    return 0


def cmd_export_value(args: argparse.Namespace) -> int:
    from .pipelines.run import export_value_model

    out = export_value_model(args.src, args.out)
    print(f"{out}: {args.src} as a *ForTokenClassification directory (one label; its sigmoid is the value at "
          f"every token)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .pipelines.demo import load_demo_config, open_demo, run_demo

    cfg = load_demo_config(args.preset, args.config, args.overrides, args.run_dir)
    run = args.opened = open_demo(cfg, progress=not args.quiet)
    run_demo(cfg, progress=not args.quiet, run=run)
    print((run.dir / "results.md").read_text(encoding="utf-8"))
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from .pipelines.view import run_view, serve

    _positive(args, page_size=1)
    index = run_view(args.run_dir, args.out, args.page_size)
    print(f"site: {index.resolve().as_uri()}")
    if args.serve:
        from .data import InputError

        try:
            server = serve(index.parent, args.port)
        except OSError as e:  # the port is taken, or below 1024 without the right
            raise InputError(f"--port {args.port}: cannot serve on 127.0.0.1 ({e.strerror or e})") from None
        host, port = server.server_address[:2]
        print(f"serving {index.parent} on http://{host}:{port}/ (Ctrl-C stops)", flush=True)
        try:
            server.serve_forever()
        finally:
            server.server_close()
    return 0


# ------------------------------------------------------------------------------- parser


def _common(p: argparse.ArgumentParser, run_dir: bool = True) -> None:
    p.add_argument("--config", help="recipe: a YAML file, or a shipped recipe's name (e.g. countdown/sos-tiny; "
                                    "`searchrl recipes` lists them)")
    if run_dir:
        p.add_argument("--run-dir", help="run directory (same as run_dir=...); an existing one starts from the "
                                         "config it recorded, with the overrides on top")
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress messages")
    p.add_argument("--help-all", action=_HelpAll, help="show this help with every setting of every section")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="settings, e.g. sft.lr=3e-4 eval.ks=[1,2,4]")


def _sub(sub, name: str, help_: str, func, epilog_fn=_command_help, run_dir: bool = True) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=help_, epilog_fn=epilog_fn,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p, run_dir)
    p.set_defaults(func=func)
    return p


def _trainer_args(p: argparse.ArgumentParser, verb: str, default_name: str, which: str, eval_note: str = "") -> None:
    """``--model``, ``--name`` and ``--eval`` of a command that trains a policy."""
    p.add_argument("--model", help=f"policy checkpoint to {verb} (default: the run's base policy)")
    p.add_argument("--name", help=f"output directory under the run directory (default: {default_name})")
    p.add_argument("--eval", action="store_true", help=f"then evaluate the {which} policy with the eval settings "
                   f"into <run_dir>/<name>-eval{eval_note}")


def build_parser() -> argparse.ArgumentParser:
    from .config import VALUE_SOURCES
    from .pipelines.search import method_choices

    parser = argparse.ArgumentParser(prog="searchrl", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"searchrl {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_LazyEpilogParser)

    data = _sub(sub, "data", "write the task's splits into --out (Countdown: train/valid/test_seen/test_unseen,\n"
                "training problems with Stream-of-Search traces, 10 percent of the targets held out)",
                cmd_data, epilog_fn=_task_help, run_dir=False)
    data.add_argument("--out", required=True, help="output directory")
    _sub(sub, "sft", "train the SFT base model on the task's demonstrations (Countdown: Stream-of-Search "
         "traces); resumes from the last checkpoint", cmd_sft)
    demo = _sub(sub, "demo", "the whole comparison: data, SoS base, ReST, Guided-ReST, PPO from each (and "
                "token-level PPO from Guided-ReST), evaluation, table and plots (resumable)", cmd_demo,
                epilog_fn=_demo_help)
    demo.add_argument("--preset", default=None, choices=("default", "full", "smoke"),
                      help="default: the real comparison (29 min from a fresh clone on a 2-core CPU, "
                           "measured: docs/methods/rest.md); full: the same with 32 samples per problem, pass@k up to k=32 (about "
                           "2.5 hours there, estimated); smoke: minuscule settings, about 30 s, numbers meaningless. "
                           "An existing run directory keeps its own unless this is given.")
    ev = _sub(sub, "eval", "greedy and sampled pass@k on the eval splits; writes results.json, results.md and "
              "PNG plots into <run_dir>/eval", cmd_eval)
    ev.add_argument("--model", help="checkpoint directory (default: the run's base policy); the tables name it by its "
                    "path unless eval.method= is given")
    gen = _sub(sub, "generate", "sample graded completions for one split into <run_dir>/generate", cmd_generate)
    gen.add_argument("--model", help="checkpoint directory (default: the run's base policy)")
    gen.add_argument("--split", default="valid", help="split to sample (default: valid)")
    gen.add_argument("--n", type=int, default=1, help="completions per problem (default: 1)")
    gen.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default: 1.0)")
    vd = _sub(sub, "value-data", "make value-model training data into <run_dir>/value-data/<source>-<key>/ "
              "(resumable): orm (outcome labels), vgs (roll-in/roll-out labels), vm-mcts (ReST-RL Algorithm 2 "
              "targets), mcts-star (ReST-MCTS* inferred targets), math-shepherd (PRM step labels: does a "
              "completion from the step reach a correct answer), gold (ReST-MCTS*'s D_V0: the train split's gold "
              "solutions with corrupted steps, inferred targets)", cmd_value_data)
    vd.add_argument("--source", required=True, choices=VALUE_SOURCES, help="data maker")
    vd.add_argument("--model", help="policy checkpoint (default: the run's base policy)")
    vd.add_argument("--value", help="value model guiding the search (mcts-star)")
    tv = _sub(sub, "train-value", "train a value model (initialised from the policy) on value data into "
              "<run_dir>/value/<name>/final; resumes from the last checkpoint", cmd_train_value)
    tv.add_argument("--kind", required=True, choices=("scalar", "3class", "orm"),
                    help="scalar: value targets (vm-mcts, mcts-star data); 3class: VGS roll-outs (vgs data); "
                         "orm: outcome labels (orm data)")
    tv.add_argument("--data", required=True, nargs="+", help="value-data directories or JSONL files")
    tv.add_argument("--model", help="policy checkpoint the value model starts from (default: the run's base)")
    tv.add_argument("--name", help="output name under <run_dir>/value/ (default: the kind)")
    se = _sub(sub, "search", "run one search method at one token budget on search.split; prints its accuracy "
              "(results in <run_dir>/search)", cmd_search)
    choices, listing = method_choices()
    se.add_argument("--method", required=True, metavar="METHOD", help=listing, choices=choices)
    se.add_argument("--budget", required=True, type=int, help="generated tokens per problem")
    se.add_argument("--model", help="policy checkpoint (default: the run's base policy)")
    cs = _sub(sub, "compare-search", "every search.methods at every search.budgets on search.split; value models "
              "left unset are made first (value data, then training); writes results.json, results.md and "
              "accuracy_vs_tokens.png into <run_dir>/compare-search (resumable)",
              cmd_compare_search)
    cs.add_argument("--model", help="policy checkpoint (default: the run's base policy)")
    cs.add_argument("--preset", choices=("smoke",), help="smoke: every step on minuscule settings with the shipped "
                    "policy, about a minute (its numbers mean nothing)")
    for name, what in (("ppo", "PPO with a critic (the ppo section; default: Guided-ReST's operation-level MDP, "
                                "an action is one line; ppo.adv_estimator=gae for the token-level ablation)"),
                       ("grpo", "GRPO without a critic (the grpo section; grpo.policy_loss=dapo "
                                "grpo.clip_high=0.28 grpo.dynamic_sampling=true grpo.overlong_buffer=N for DAPO)")):
        rl = _sub(sub, name, f"{what}: trains --model (default: the run's base policy) on the task's {name}.split "
                  f"into <run_dir>/<name>/final, with metrics.jsonl and curves.png; resumes from the last "
                  f"checkpoint", cmd_rl)
        _trainer_args(rl, "train", name, "trained")
    st = _sub(sub, "selftrain", "ReST (selftrain.guidance_rounds=0) or Guided-ReST from --model (default: the run's "
              "base policy) on the task's selftrain.split into <run_dir>/<name>/iterN: generate, keep the correct, "
              "fine-tune (rest_sft section; from the base each iteration); selftrain.turns=4: multi-turn code "
              "self-repair episodes, guidance inserts the reference solution; resumable", cmd_selftrain)
    _trainer_args(st, "start from", "guided-rest, or rest without guidance", "last",
                  " (eval.turns=4 for self-repair episodes)")
    rm = _sub(sub, "rest-mcts", "ReST-MCTS* (seed 002): an initial value model V0 on the train split's gold solutions "
              "with corrupted steps, then per iteration MCTS* (search.mcts_star, rest_mcts.search_iterations) on "
              "rest_mcts.split guided by the policy and the value model, the correct end states fine-tune the policy "
              "(rest_sft, continuing), the inferred step values retrain the value model (value); from --model into "
              "<run_dir>/<name>/iterN; resumable", cmd_rest_mcts)
    _trainer_args(rm, "start from", "rest-mcts", "last")
    ev_ = _sub(sub, "export-verl", "write a split of the run's task as a verl parquet file (data_source, prompt, "
               "ability, reward_model, extra_info); grade with searchrl.tasks.verl.compute_score", cmd_export_verl)
    ev_.add_argument("--split", required=True, help="the task's split to export")
    ev_.add_argument("--out", required=True, help="output .parquet file")
    ev_.add_argument("--n", type=int, default=0, help="first N problems (default: all)")
    xv = _sub(sub, "export-value", "write a scalar value model (a directory or a Hub name) as a "
              "*ForTokenClassification directory that transformers, TRL and vLLM load as they are", cmd_export_value,
              run_dir=False)
    xv.add_argument("src", help="value model directory (written by train-value) or Hub name org/name[@revision]")
    xv.add_argument("out", help="new output directory")
    rg = _sub(sub, "rest-grpo", "ReST-GRPO (ReST-RL Algorithm 1: sample rest_grpo.samples solutions per question, "
              "drop questions whose reward std < sigma0, add partial-solution prompts of the best ones, train GRPO "
              "with the grpo section; rest_grpo.method=grpo: the GRPO baseline on the same loop and steps) from "
              "--model into <run_dir>/<name>/iterN, with reward_std.png; resumable", cmd_rest_grpo)
    _trainer_args(rg, "train", "rest_grpo.method", "last")
    vw = sub.add_parser("view", help="write a run directory as a static site (no server: open index.html from "
                        "file://): stages and settings, results and plots, samples filterable by grade, SoS traces "
                        "and search trees, Guided-ReST prefixes, self-repair episodes, training curves",
                        description="write RUN_DIR as a static site into --out (default RUN_DIR/view); --serve "
                                    "also serves it on 127.0.0.1")
    vw.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (any command's)")
    vw.add_argument("--out", help="site directory (default: RUN_DIR/view; replaced whole on every run)")
    vw.add_argument("--page-size", type=int, default=50, help="samples, episodes or trees per page (default: 50)")
    vw.add_argument("--serve", action="store_true", help="then serve the site on http://127.0.0.1:PORT until Ctrl-C")
    vw.add_argument("--port", type=int, default=8000, help="port for --serve (default: 8000; 0: any free port)")
    vw.set_defaults(func=cmd_view, quiet=True)
    rc = sub.add_parser("recipes", help="list the shipped recipes, one line each (use a name with --config)",
                        description="the shipped recipes (package data): --config NAME runs one, e.g. "
                                    "`searchrl sft --config countdown/sos-tiny`")
    rc.set_defaults(func=cmd_recipes, quiet=True)
    return parser


def _version() -> str:
    """The installed package's version (its metadata), or the source tree's when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("searchrl")
    except PackageNotFoundError:
        from . import __version__

        return __version__


def cmd_recipes(args: argparse.Namespace) -> int:
    from .config import list_recipes

    recipes = list_recipes()
    width = max(len(name) for name, _ in recipes)
    try:
        for name, summary in recipes:
            print(f"{name:<{width}}  {summary}", flush=True)
    except BrokenPipeError:  # `searchrl recipes | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def configure_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="[searchrl %(asctime)s] %(message)s", datefmt="%H:%M:%S", force=True)
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``key=value`` overrides may stand anywhere among the options
    (``ppo --run-dir R a=1 --model M b=2``), in the order given."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    for action in parser._subparsers._group_actions:  # each command's help shows the task the line selects
        for p in action.choices.values():
            p.help_argv = argv
    args, extra = parser.parse_known_args(argv)
    if extra:
        bad = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
        if bad:
            parser.error(f"unrecognized arguments: {' '.join(bad)}")
        args.overrides = list(args.overrides) + extra
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.quiet)
    from .data import InputError
    from .rundir import RunDirError

    try:
        return args.func(args)
    except (InputError, RunDirError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        # bad input: the message says what and where
        _restore(args)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept, rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception:
        _restore(args)
        raise
    finally:
        if "searchrl.fanout" in sys.modules:  # the command's Ray actors end with it
            sys.modules["searchrl.fanout"].close_all()
        if "searchrl.tracking" in sys.modules:  # and its trackers (files flushed, W&B runs finished)
            sys.modules["searchrl.tracking"].deactivate()


def _restore(args: argparse.Namespace) -> None:
    """A failed command's run directory gets back the config it had recorded before (see Run.restore_config)."""
    run = getattr(args, "opened", None)
    if run is not None:
        run.restore_config()


if __name__ == "__main__":
    sys.exit(main())
