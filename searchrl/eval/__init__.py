"""Evaluation: pass@k (Chen et al. 2021, eq. 1), accuracy under a token budget, and the report.

:mod:`.metrics` turns graded samples into numbers; :mod:`.report` renders them as the
Guided-ReST paper's pass@k table (Seen / Unseen target, k = 1..32) and figures.
"""

from searchrl.eval.metrics import (
    DEFAULT_KS,
    accuracy_vs_budget,
    default_budgets,
    pass_at_k,
    pass_at_k_table,
    pass_at_k_vs_budget,
    summarize,
)
from searchrl.eval.report import (
    markdown_table,
    plot_accuracy_vs_budget,
    plot_pass_at_k,
    write_report,
)

__all__ = [
    "DEFAULT_KS",
    "accuracy_vs_budget",
    "default_budgets",
    "pass_at_k",
    "pass_at_k_table",
    "pass_at_k_vs_budget",
    "summarize",
    "markdown_table",
    "plot_accuracy_vs_budget",
    "plot_pass_at_k",
    "write_report",
]
