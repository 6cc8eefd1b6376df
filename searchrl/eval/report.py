"""The Guided-ReST results as a reader sees them: a markdown table and two figures.

(One module of ~600 lines on purpose: every table and plot a results directory holds is written
here, in one style, so a reader finds them all in one place.)

Why this module exists
----------------------
:mod:`searchrl.eval.metrics` produces numbers; this module renders them the way the
paper does, so a run can be compared with the paper at a glance:

* a pass@k table (rows = methods, columns = k = 1, 2, 4, ..., 32 for the "Seen target"
  and the "Unseen target" splits), in percent with one decimal. pass@k is the unbiased
  estimator of Chen et al. (2021), HumanEval, eq. 1 (see :func:`~searchrl.eval.metrics.pass_at_k`);
* a pass@k-vs-k figure (one panel per split, log2 k axis);
* an accuracy-vs-token-budget figure (one panel per split), from
  :func:`~searchrl.eval.metrics.accuracy_vs_budget`.

Every file is written atomically (:func:`searchrl.data.atomic_write`), so an
interrupted run never leaves a truncated ``results.json`` or PNG behind. Plots use
matplotlib's Agg canvas directly (no pyplot, no display, no global backend switch).

Inputs may come straight from :func:`~searchrl.eval.metrics.summarize` (integer keys)
or from a ``results.json`` read back from disk (JSON makes the keys strings); both work.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from searchrl.data import atomic_write, write_json, write_text
from searchrl.eval.metrics import DEFAULT_KS

__all__ = [
    "DEFAULT_SPLITS",
    "SPLIT_TITLES",
    "markdown_table",
    "plot_pass_at_k",
    "plot_accuracy_vs_budget",
    "plot_accuracy_vs_tokens",
    "write_report",
]

DEFAULT_SPLITS: tuple[str, ...] = ("test_seen", "test_unseen")
SPLIT_TITLES: dict[str, str] = {"test_seen": "Seen target", "test_unseen": "Unseen target",
                                 "valid": "Seen target (valid)", "valid_unseen": "Unseen target (valid)"}
DASH = "\u2013"  # en dash: "not available"
DPI = 120


# ----------------------------------------------------------------------------- helpers

def _int_keyed(d: Mapping[Any, Any] | None) -> dict[int, float]:
    """``{k: value}`` with integer keys (JSON gives strings) and only finite numeric values."""
    out: dict[int, float] = {}
    for key, value in (d or {}).items():
        try:
            k = int(key)
        except (TypeError, ValueError):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[k] = float(value)
    return out


def _percent(value: Any) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return DASH
    return f"{100.0 * value:.1f}"


def _with_ci(value: Any, ci: Any) -> str:
    """``71.2 (65.0..77.3)``: the value and its 95% interval, in percent (intervals near 0 or
    100 % are lopsided, so both bounds are shown)."""
    text = _percent(value)
    if text == DASH or not _is_interval(ci):
        return text
    return f"{text} ({100.0 * ci[0]:.1f}..{100.0 * ci[1]:.1f})"


def _is_interval(ci: Any) -> bool:
    return isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci)


def _has_intervals(intervals: Mapping[str, Mapping[str, Any]] | None) -> bool:
    """Whether any ``intervals[method][split]`` holds an interval (directly or per k)."""
    for per_split in (intervals or {}).values():
        for v in (per_split or {}).values():
            if _is_interval(v) or (isinstance(v, Mapping) and any(_is_interval(x) for x in v.values())):
                return True
    return False


def _title(split: str, split_titles: Mapping[str, str] | None) -> str:
    return (split_titles or {}).get(split, split)


def _save(fig, path: str | os.PathLike) -> None:
    """Render ``fig`` with the Agg canvas into ``path`` atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=DPI)


def _new_figure(n_panels: int, title: str | None):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6 * max(n_panels, 1) + 0.4, 4.3), layout="constrained")
    axes = fig.subplots(1, max(n_panels, 1), sharey=True, squeeze=False)[0]
    if title:
        fig.suptitle(title, fontsize=12)
    return fig, axes


def _method_styles(methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """One color/marker per method, identical in every panel and figure."""
    import matplotlib

    colors = matplotlib.colormaps["tab10"].colors
    markers = "osD^vP*Xh<>p"
    return {m: {"color": colors[i % len(colors)], "marker": markers[i % len(markers)]} for i, m in enumerate(methods)}


def _finish(fig, axes, ylabel: str, handles_by_label: dict[str, Any], top: float = 100.0) -> None:
    axes[0].set_ylabel(ylabel)
    for ax in axes:
        ax.set_ylim(0, top)
        ax.grid(True, which="major", alpha=0.35)
        ax.tick_params(labelleft=True)
    if handles_by_label:
        # Legend outside the panels so it never covers a line.
        fig.legend(list(handles_by_label.values()), list(handles_by_label.keys()), loc="outside lower center",
                   ncols=min(len(handles_by_label), 4), frameon=False)


def _no_data(ax) -> None:
    ax.set_xticks([])
    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.5", fontsize=12)


# ----------------------------------------------------------------------------- table

def markdown_table(
    results: Mapping[str, Mapping[str, Mapping[Any, float]]],
    splits: Sequence[str] = DEFAULT_SPLITS,
    split_titles: Mapping[str, str] | None = SPLIT_TITLES,
    ks: Iterable[int] = DEFAULT_KS,
    greedy: Mapping[str, Mapping[str, float]] | None = None,
    intervals: Mapping[str, Mapping[str, Mapping[Any, Any]]] | None = None,
    greedy_intervals: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """The paper's pass@k table as GitHub markdown.

    ``intervals[method][split][k]`` / ``greedy_intervals[method][split]`` (``[lo, hi]`` in
    [0, 1]), when given, are shown as ``value (lo..hi)`` (95% bootstrap over problems).

    ``results[method][split][k]`` is pass@k in [0, 1] (Chen et al. 2021, eq. 1), shown in
    percent with one decimal. Rows follow the order of ``results``. Markdown has one
    header row, so the paper's two-level header (split, then k) is emulated: the first
    column of each split's block is titled ``"<split title> k=1"``, the others ``"k=2"``,
    ... and a caption line above the table spells out the grouping. ``greedy[method][split]``
    (accuracy in [0, 1]) adds a ``greedy`` column at the end of each block. Missing or
    non-finite values are shown as an en dash (``–``).
    """
    ks = [int(k) for k in ks]
    splits = list(splits)
    show_greedy = greedy is not None
    header = ["Method"]
    for split in splits:
        title = _title(split, split_titles)
        header += [f"{title} k={k}" if i == 0 else f"k={k}" for i, k in enumerate(ks)]
        if show_greedy:
            header.append("greedy" if ks else f"{title} greedy")
    align = [":---"] + ["---:"] * (len(header) - 1)
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(align) + " |",
    ]
    for method, per_split in results.items():
        row = [str(method).replace("|", "\\|")]
        for split in splits:
            values = _int_keyed((per_split or {}).get(split))
            cis = {int(k): v for k, v in (((intervals or {}).get(method) or {}).get(split) or {}).items()}
            row += [_with_ci(values.get(k), cis.get(k)) for k in ks]
            if show_greedy:
                row.append(_with_ci((greedy.get(method) or {}).get(split),
                                    ((greedy_intervals or {}).get(method) or {}).get(split)))
        lines.append("| " + " | ".join(row) + " |")
    blocks = "; ".join(
        f"{_title(s, split_titles)}: k = {', '.join(map(str, ks))}" + (" and greedy" if show_greedy else "")
        for s in splits
    )
    caption = (f"pass@k (%), unbiased estimator of Chen et al. (2021), eq. 1. Column blocks: {blocks}. "
               f"{DASH} = not available."
               + (" In parentheses: the 95% bootstrap interval over problems."
                  if _has_intervals(intervals) or _has_intervals(greedy_intervals) else ""))
    return caption + "\n\n" + "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- plots

def _plot_methods(ax, results, methods, split, styles, handles, markersize, keep=lambda x: True,
                  intervals=None) -> set[int]:
    """One line per method of ``results[method][split][x]`` (rates in [0, 1], drawn in %), with a
    shaded band where ``intervals[method][split][x] = [lo, hi]`` is given; returns the x values
    drawn and records each method's line in ``handles``."""
    drawn: set[int] = set()
    for method in methods:
        values = _int_keyed((results[method] or {}).get(split))
        xs = sorted(x for x in values if keep(x))
        if not xs:
            continue
        drawn.update(xs)
        (line,) = ax.plot(xs, [100.0 * values[x] for x in xs], label=method, linewidth=1.8, markersize=markersize,
                          clip_on=False, zorder=3, **styles[method])
        handles.setdefault(method, line)
        cis = {int(k): v for k, v in (((intervals or {}).get(method) or {}).get(split) or {}).items()}
        band = [x for x in xs if _is_interval(cis.get(x))]
        if band:
            ax.fill_between(band, [100.0 * cis[x][0] for x in band], [100.0 * cis[x][1] for x in band],
                            color=styles[method]["color"], alpha=0.15, linewidth=0, zorder=2)
    return drawn


def plot_pass_at_k(
    results: Mapping[str, Mapping[str, Mapping[Any, float]]],
    path: str | os.PathLike,
    splits: Sequence[str] = DEFAULT_SPLITS,
    title: str | None = None,
    split_titles: Mapping[str, str] | None = SPLIT_TITLES,
    intervals: Mapping[str, Mapping[str, Mapping[Any, Any]]] | None = None,
) -> None:
    """pass@k (%) against k, one panel per split and one line per method; written atomically as PNG.

    ``results[method][split][k]`` in [0, 1] (Chen et al. 2021, eq. 1). The k axis is
    log2 with ticks at the plotted k (1, 2, 4, ..., 32); y runs from 0 to 100 %. Shaded
    bands: ``intervals[method][split][k] = [lo, hi]`` (95% bootstrap over problems).
    """
    splits = list(splits)
    methods = list(results)
    styles = _method_styles(methods)
    fig, axes = _new_figure(len(splits), title if title is not None else "pass@k")
    handles: dict[str, Any] = {}
    for ax, split in zip(axes, splits):
        all_ks = _plot_methods(ax, results, methods, split, styles, handles, markersize=6, keep=lambda k: k >= 1,
                               intervals=intervals)
        ax.set_xscale("log", base=2)
        ticks = sorted(all_ks) or list(DEFAULT_KS)
        ax.set_xticks(ticks, [str(k) for k in ticks])
        ax.minorticks_off()
        ax.set_xlim(min(ticks) / 1.25, max(ticks) * 1.25)
        ax.set_xlabel("k (samples per problem, log scale)")
        ax.set_title(_title(split, split_titles))
        if not all_ks:
            _no_data(ax)
    _finish(fig, axes, "pass@k (%)", handles)
    _save(fig, path)


def plot_accuracy_vs_budget(
    budget_results: Mapping[str, Mapping[str, Mapping[Any, float]]],
    path: str | os.PathLike,
    splits: Sequence[str] = DEFAULT_SPLITS,
    title: str | None = None,
    split_titles: Mapping[str, str] | None = SPLIT_TITLES,
) -> None:
    """Accuracy (%) against token budget, one panel per split and one line per method; atomic PNG.

    ``budget_results[method][split][B]`` in [0, 1] from
    :func:`~searchrl.eval.metrics.accuracy_vs_budget` (a sample counts only if correct
    within B tokens). The budget axis is log2 when the budgets span at least a factor of 8
    (the usual powers-of-two grid), linear otherwise; y runs from 0 to just above the
    highest value (at most 100 %), so small accuracies stay readable.
    """
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    splits = list(splits)
    methods = list(budget_results)
    styles = _method_styles(methods)
    fig, axes = _new_figure(len(splits), title if title is not None else "Accuracy vs. token budget")
    handles: dict[str, Any] = {}
    for ax, split in zip(axes, splits):
        all_b = _plot_methods(ax, budget_results, methods, split, styles, handles, markersize=5)
        positive = sorted(b for b in all_b if b > 0)
        if positive and len(positive) == len(all_b) and positive[-1] >= 8 * positive[0]:
            ax.set_xscale("log", base=2)
            ticks = positive
            if len(ticks) > 9:  # thin out so the labels do not collide
                step = math.ceil(len(ticks) / 9)
                ticks = ticks[::-1][::step][::-1]
            ax.set_xticks(ticks)
            ax.minorticks_off()
            ax.set_xlim(positive[0] / 1.25, positive[-1] * 1.25)
            ax.set_xlabel("token budget (tokens, log scale)")
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("token budget (tokens)")
        ax.xaxis.set_major_formatter(FuncFormatter(_fmt_tokens))
        ax.set_title(_title(split, split_titles))
        if not all_b:
            _no_data(ax)
    highest = max((100.0 * v for m in methods for sp in splits
                    for v in _int_keyed((budget_results[m] or {}).get(sp)).values()), default=100.0)
    _finish(fig, axes, "accuracy per sample (%)", handles, top=min(100.0, max(10.0, math.ceil(highest * 1.15 / 5) * 5)))
    _save(fig, path)


def plot_accuracy_vs_tokens(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str) -> None:
    """Search accuracy against generated tokens per problem: one line per method (x = tokens it
    actually used at each budget, log2 axis), 95% intervals as error bars; an oracle dashed.
    ``rows``: ``{"method", "label", "generated_tokens", "accuracy", "ci_low", "ci_high", "oracle"}``."""
    from matplotlib.ticker import FuncFormatter

    import matplotlib

    methods = list(dict.fromkeys(r["method"] for r in rows))
    styles = _method_styles(methods)
    if len(methods) > 10:  # tab10 would repeat a color
        colors = matplotlib.colormaps["tab20"].colors
        for i, m in enumerate(methods):
            styles[m]["color"] = colors[(2 * i) % 20 + (2 * i) // 20]
    fig, axes = _new_figure(1, None)
    fig.set_size_inches(7.5, 5.6)
    fig.suptitle(title.replace("; ", "\n", 1), fontsize=9)
    ax = axes[0]
    handles = {}
    for m in methods:
        pts = sorted((r for r in rows if r["method"] == m), key=lambda r: r["generated_tokens"])
        x = [r["generated_tokens"] for r in pts]
        y = [100 * r["accuracy"] for r in pts]
        err = [[100 * (r["accuracy"] - r["ci_low"]) for r in pts], [100 * (r["ci_high"] - r["accuracy"]) for r in pts]]
        label = pts[0].get("label", m) + (" (oracle)" if pts[0].get("oracle") and "oracle" not in
                                          pts[0].get("label", m) else "")
        h = ax.errorbar(x, y, yerr=err, capsize=3, linewidth=1.5, markersize=5, alpha=0.9,
                        linestyle="--" if pts[0].get("oracle") else "-", **styles[m])
        handles[label] = h
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(_fmt_tokens))
    ax.set_xlabel("generated tokens per problem (mean)")
    lows = [100 * r["ci_low"] for r in rows] or [0.0]
    highs = [100 * r["ci_high"] for r in rows] or [100.0]
    axes[0].set_ylabel("accuracy (%)")
    ax.set_ylim(max(0.0, math.floor(min(lows) / 5) * 5 - 5), min(100.0, math.ceil(max(highs) / 5) * 5 + 2))
    ax.grid(True, which="major", alpha=0.35)
    fig.legend(list(handles.values()), list(handles.keys()), loc="outside lower center", ncols=3, frameon=False,
               fontsize=8)
    _save(fig, path)


def _fmt_tokens(x: float, _pos=None) -> str:
    # Exact token counts: "1k" would leave the reader guessing between 1000 and 1024.
    return f"{int(x)}" if float(x).is_integer() else f"{x:g}"


# ----------------------------------------------------------------------------- report

def _methods_of(results_json: Mapping[str, Any]) -> Mapping[str, Any]:
    methods = results_json.get("methods", results_json) if isinstance(results_json, Mapping) else None
    if not isinstance(methods, Mapping):
        raise ValueError("write_report: results_json must map method -> split -> summary "
                         "(or hold such a mapping under 'methods')")
    for method, per_split in methods.items():
        if not isinstance(per_split, Mapping) or not all(isinstance(s, Mapping) for s in per_split.values()):
            raise ValueError(f"write_report: method {method!r}: expected a mapping split -> summary dict "
                             "(as returned by searchrl.eval.metrics.summarize)")
    return methods


def _stats_table(methods: Mapping[str, Any], splits: Sequence[str], split_titles: Mapping[str, str] | None) -> str:
    def num(v: Any, fmt: str) -> str:
        return DASH if not isinstance(v, (int, float)) or isinstance(v, bool) else format(v, fmt)

    lines = ["| Method | Split | Problems | Samples | Mean tokens | Mean tokens (correct) |",
             "| :--- | :--- | ---: | ---: | ---: | ---: |"]
    for method, per_split in methods.items():
        for split in splits:
            s = per_split.get(split)
            if s is None:
                continue
            lines.append(f"| {method} | {_title(split, split_titles)} | {num(s.get('num_problems'), 'd')} | "
                         f"{num(s.get('num_samples'), 'd')} | {num(s.get('mean_tokens'), '.1f')} | "
                         f"{num(s.get('mean_tokens_correct'), '.1f')} |")
    return "\n".join(lines) + "\n"


def comparison_table(comparisons: Sequence[Mapping[str, Any]], split_titles: Mapping[str, str] | None) -> str:
    """Paired differences (percentage points, 95% interval) as Markdown; the sign says which is ahead."""
    lines = ["| Comparison | Split | Metric | Difference (points) | 95% interval | Problems |",
             "| :--- | :--- | :--- | ---: | ---: | ---: |"]
    for c in comparisons:
        if c.get("diff") is None:
            continue
        lo, hi = c["ci"]
        verdict = "" if lo <= 0 <= hi else " *"
        lines.append(f"| {c['b']} − {c['a']} | {_title(c['split'], split_titles)} | {c['metric']} | "
                     f"{100 * c['diff']:+.1f}{verdict} | {100 * lo:+.1f} .. {100 * hi:+.1f} | {c['problems']} |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    """The CPU (and GPU, if one is used) and torch build that produced a result, in words.

    Results are deterministic on one machine, but another instruction set (AVX2 vs AVX-512)
    changes float reduction orders in training, which moves samples that sit at near-ties.
    """
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    out = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()} kernels)"
    if torch.cuda.is_available():
        out += f", {torch.cuda.get_device_name(0)}"
    return out


def write_report(
    out_dir: str | os.PathLike,
    results_json: Mapping[str, Any],
    splits: Sequence[str] = DEFAULT_SPLITS,
    split_titles: Mapping[str, str] | None = SPLIT_TITLES,
    ks: Iterable[int] = DEFAULT_KS,
    title: str | None = None,
    sampling: str | None = None,
    machine: str | None = None,
    model: str | None = None,
) -> dict[str, str]:
    """Write ``results.json``, ``results.md``, ``passk.png`` and ``accuracy_vs_budget.png`` atomically.

    ``results_json`` is either ``{"methods": {method: summary}, ...other metadata}`` or
    directly ``{method: summary}``, where ``summary = summarize(...)`` from
    :mod:`searchrl.eval.metrics`, i.e. ``summary[split]["pass@k"][k]`` (Chen et al. 2021,
    eq. 1), ``summary[split]["accuracy_vs_budget"][B]`` and optionally
    ``summary[split]["greedy"]``, their intervals and per-problem counts. ``results_json`` is
    saved with a ``"comparisons"`` list added (paired differences of every pair of methods:
    :func:`~searchrl.eval.metrics.compare_methods`; JSON turns integer keys into strings).
    ``sampling`` says what was sampled (e.g. "temperature 1.0, 32 samples x 50 problems per
    split"); it goes into the plots' titles. ``machine`` (e.g. :func:`searchrl.eval.report.machine`)
    is stated under the table: float results move with the CPU's instruction set. ``model`` names the
    evaluated checkpoint at the head of ``results.md``. Returns ``{"json", "markdown", "passk_png",
    "budget_png"}`` -> path.
    """
    from searchrl.eval.metrics import compare_methods

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    methods = _methods_of(results_json)
    ks = [int(k) for k in ks]
    splits = list(splits)

    def per(key):
        return {m: {s: ps.get(s, {}).get(key) for s in splits} for m, ps in methods.items()}

    passk = {m: {s: v or {} for s, v in d.items()} for m, d in per("pass@k").items()}
    budget = {m: {s: v or {} for s, v in d.items()} for m, d in per("accuracy_vs_budget").items()}
    has_greedy = any("greedy" in ps.get(s, {}) for ps in methods.values() for s in splits)
    greedy = per("greedy") if has_greedy else None
    passk_ci, greedy_ci = per("pass@k_ci"), per("greedy_ci")
    # pass@k compared at the smallest and the largest k that every method reports
    reported = [set.intersection(*[{int(k) for k in (passk[m].get(sp) or {})} for m in passk]) for sp in splits]
    common = sorted(set.intersection(*reported)) if reported and passk else []
    metrics = [f"pass@{k}" for k in sorted({common[0], common[-1]})] if common else []
    metrics += ["greedy"] if has_greedy else []
    comparisons = compare_methods(methods, splits, metrics)
    shown = _has_intervals(passk_ci) or _has_intervals(greedy_ci)
    if isinstance(results_json, Mapping) and "methods" in results_json:
        results_json = {**results_json, "comparisons": comparisons}

    paths = {
        "json": str(out / "results.json"),
        "markdown": str(out / "results.md"),
        "passk_png": str(out / "passk.png"),
        "budget_png": str(out / "accuracy_vs_budget.png"),
    }
    note = f"\n{sampling}" if sampling else ""
    write_json(paths["json"], results_json)
    plot_pass_at_k(passk, paths["passk_png"], splits=splits, split_titles=split_titles,
                   title=(f"{title}: pass@k" if title else "pass@k") + note
                   + (("; " if note else "\n") + "bands: 95% intervals" if shown else ""),
                   intervals=passk_ci)
    plot_accuracy_vs_budget(budget, paths["budget_png"], splits=splits, split_titles=split_titles,
                            title=(f"{title}: accuracy vs. token budget" if title else "Accuracy vs. token budget")
                            + note)
    md = [f"# {title or 'Results'}", "", *([f"Model: `{model}`", ""] if model else []),
          (f"Sampled: {sampling}. " if sampling else "") + ("Intervals: 95% percentile bootstrap over problems "
                                                            "(2,000 resamples, seeded)." if shown else "")
          + (f" Produced on: {machine}." if machine else ""), "",
          markdown_table(passk, splits=splits, split_titles=split_titles, ks=ks, greedy=greedy,
                         intervals=passk_ci, greedy_intervals=greedy_ci),
          "![pass@k](passk.png)", ""]
    if comparisons:
        md += ["## Paired differences", "",
               "The same problems for both methods, resampled together; * marks an interval that excludes 0.", "",
               comparison_table(comparisons, split_titles)]
    md += ["## Accuracy vs. token budget", "",
           "A sample counts as correct at budget B only if it is correct and used at most B tokens; "
           "per-problem accuracy averaged over problems (sampled responses, so the last budget equals pass@1).", "",
           "![accuracy vs. token budget](accuracy_vs_budget.png)", "",
           "## Samples", "",
           _stats_table(methods, splits, split_titles)]
    write_text(paths["markdown"], "\n".join(md))
    return paths


#: the panels of an RL run's training curves: (metrics key, title), in order; absent keys are skipped
RL_CURVES = (("reward/task_mean", "task reward (mean)"), ("reward/correct", "correct fraction"),
             ("critic/vf_loss", "critic value loss"), ("actor/clip_frac", "clipped fraction of actions"),
             ("actor/approx_kl", "approx. KL(old || new) per action"), ("response/length_mean", "response length (tokens)"),
             ("groups/reward_std", "group reward std (p10 / median / p90)"))


def plot_training_curves(lines: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str) -> None:
    """An RL run's metrics.jsonl lines as small panels against the iteration (see :data:`RL_CURVES`);
    a list-valued metric (the reward std of each group) is drawn as its median with a p10..p90 band."""
    import numpy as np

    panels = [(k, t) for k, t in RL_CURVES if any(k in line for line in lines)]
    if "groups/reward_std" in dict(panels) and not any(len(line.get("groups/reward_std") or []) > 1 for line in lines):
        panels = [(k, t) for k, t in panels if k != "groups/reward_std"]  # one response per prompt: no groups
    if all(line.get("reward/correct") == line.get("reward/task_mean") for line in lines):
        panels = [(k, t) for k, t in panels if k != "reward/correct"]  # a 0/1 reward: the same curve twice
    cols = 3
    rows = max(1, math.ceil(len(panels) / cols))
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.0 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    fig.suptitle(title + "\nthin: each iteration; thick: running mean over 5 iterations", fontsize=9)
    for ax, (key, name) in zip(axes, panels):
        pts = [(line["iteration"], line[key]) for line in lines if key in line and line[key] is not None]
        if not pts:
            _no_data(ax)
            continue
        x = [p[0] for p in pts]
        if isinstance(pts[0][1], list):
            q = np.array([np.percentile(v, [10, 50, 90]) if v else [np.nan] * 3 for _, v in pts])
            ax.fill_between(x, q[:, 0], q[:, 2], alpha=0.25, color="tab:blue", linewidth=0)
            ax.plot(x, q[:, 1], color="tab:blue", linewidth=1.5)
        else:
            y = [float(v) for _, v in pts]
            ax.plot(x, y, color="tab:blue", linewidth=1.0, alpha=0.45)
            if len(y) >= 5:  # a running mean over 5 iterations: the trend through the sampling noise
                k = 5
                smooth = np.convolve(y, np.ones(k) / k, mode="valid")
                ax.plot(x[k - 1:], smooth, color="tab:blue", linewidth=1.8)
        ax.set_title(name, fontsize=9)
        if not isinstance(pts[0][1], list) and 0 < max(abs(float(v)) for _, v in pts) < 1e-2:
            from matplotlib.ticker import FuncFormatter  # small values: exponent on each tick, not above the axis

            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.1e}"))
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.35)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    _save(fig, path)


def plot_reward_std(runs: Mapping[str, Sequence[tuple[int, Sequence[float]]]], path: str | os.PathLike,
                    sigma0: float, title: str) -> None:
    """ReST-RL Figure 2: the reward std of GRPO's groups over training, per method. Left: the fraction
    of groups with std below ``sigma0`` (no learning signal) at each step; right: the distribution of
    all groups' stds. ``runs[name]`` is ``[(step, [std of each group])]`` (``reward_std_by_step``)."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    fig.suptitle(title + "\nleft: thin = each step, thick = running mean over 5 steps", fontsize=9)
    styles = _method_styles(list(runs))
    for name, pts in runs.items():
        if not pts:
            continue
        x = [s for s, _ in pts]
        y = [100.0 * float(np.mean([v < sigma0 for v in stds])) if stds else np.nan for _, stds in pts]
        color = styles[name].get("color")
        left.plot(x, y, color=color, linewidth=0.8, alpha=0.4)
        k = min(5, len(y))  # running mean over 5 steps: the trend through the few groups of one step
        left.plot(x[k - 1:], np.convolve(y, np.ones(k) / k, mode="valid"), label=name, color=color, linewidth=1.8)
        every = np.concatenate([np.asarray(stds, dtype=float) for _, stds in pts if stds])
        right.hist(every, bins=np.linspace(0, 0.55, 23), alpha=0.5, label=name, color=color)
    left.set_xlabel("GRPO step", fontsize=8)
    left.set_ylabel(f"groups with reward std < {sigma0:g} (%)", fontsize=8)
    right.set_xlabel("reward std of a group", fontsize=8)
    right.set_ylabel("groups", fontsize=8)
    for ax in (left, right):
        ax.grid(True, alpha=0.35)
        ax.tick_params(labelsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    _save(fig, path)
