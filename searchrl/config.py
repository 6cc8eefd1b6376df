"""Configs: dataclasses filled from YAML recipes plus ``key=value`` overrides.

OmegaConf does the parsing and type checking (``sft.lr=3e-4`` is checked against the
dataclass field's type). Every field has a help string, so ``--help`` lists every option,
its default and its unit. The ``task`` section is the settings dataclass of the task it
names (``task.name``, default ``countdown``), found in the task registry, so this module
never names a task's settings itself.

Errors name their source: a recipe file and line (``recipe.yaml:12: sft.lrr: no such
setting (did you mean sft.lr?)``), or the command line.

This module sits below the pipelines and the CLI and above the trainers: it imports the
trainers' config dataclasses, never a pipeline.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .data import InputError
from .search import registry as search_methods
from .search.config import BeamConfig, MCTSStarConfig, VMMCTSConfig
from .settings import SettingError, at_least, one_of
from .tracking import TrackingConfig
from .train.config import DPOConfig, RLConfig, SFTConfig, ValueTrainConfig


def _f(default: Any, help: str, **kw) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class ModelConfig:
    name: str = _f("tiny-1m", "a preset (micro, tiny-1m, tiny-3m, small-8m, small-20m; vocabulary from the task), "
                              "a local Hugging Face model directory, or a Hub name org/name[@revision] (through the "
                              "Hugging Face cache: HF_HOME, HF_HUB_OFFLINE)")
    max_seq_len: int = _f(1024, "context length of presets (tokens)")
    dtype: str = _f("float32", "weights dtype for loading: float32 | bfloat16 | float16")
    device: str = _f("auto", "auto (cuda when available, else cpu) | cpu | cuda | cuda:N")

    def __post_init__(self):
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32 | bfloat16 | float16, got {self.dtype!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto | cpu | cuda | cuda:N, got {self.device!r}")


#: generation backends (see searchrl.engine.factory.make_generator)
BACKENDS = ("searchrl", "hf", "vllm")


@dataclass
class EngineConfig:
    backend: str = _f("searchrl", "generation backend: searchrl (our continuously batched sampler; other "
                                  "architectures use their HF forward) | hf (always the HF forward) | vllm (pip install "
                                  "'searchrl[vllm]'; the model's saved HF directory)")
    workers: int = _f(0, "Ray actors that make the shards of generation, evaluation and search (0 = this "
                         "process; pip install 'searchrl[ray]'); results do not depend on it")
    ray_address: str = _f("", "Ray cluster to join: '' = start a local one with workers x cpus_per_worker CPUs, "
                              "'auto' or HOST:PORT = one started by `ray start`")
    cpus_per_worker: float = _f(1.0, "CPUs each Ray actor reserves (its torch threads)")
    gpus_per_worker: float = _f(0.0, "GPUs each Ray actor reserves (1 = a GPU each; fractions share one)")
    gpu_memory_utilization: float = _f(0.9, "backend vllm: the share of the GPU's memory the engine takes (vLLM's "
                                            "gpu_memory_utilization); lower it where a trainer shares the GPU (ppo, "
                                            "grpo: e.g. 0.3, as TRL's colocate mode)")

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {' | '.join(BACKENDS)}, got {self.backend!r}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise SettingError("gpu_memory_utilization", self.gpu_memory_utilization, "must be in (0, 1]")
        if self.workers < 0 or self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise ValueError(f"workers >= 0, cpus_per_worker > 0 and gpus_per_worker >= 0, got {self.workers}, "
                             f"{self.cpus_per_worker}, {self.gpus_per_worker}")


@dataclass
class EvalConfig:
    splits: list[str] = _f(["test_seen", "test_unseen"], "splits to evaluate")
    n_problems: int = _f(200, "first N problems of each split (0 = all)")
    n_samples: int = _f(32, "sampled completions per problem for pass@k (0 = none)")
    temperature: float = _f(1.0, "sampling temperature for pass@k")
    top_p: float = _f(1.0, "nucleus sampling threshold")
    greedy: bool = _f(True, "also decode greedily (one sample per problem)")
    max_tokens: int = _f(1024, "response budget (tokens); prompt + response must fit the context")
    ks: list[int] = _f([1, 2, 4, 8, 16, 32], "k values of pass@k")
    batch_size: int = _f(64, "rows decoded together by the sampler")
    shard_problems: int = _f(50, "problems per resumable shard of generated samples")
    seed: int = _f(0, "seed of the sampled completions (per problem and sample)")
    method: str = _f("model", "name of the evaluated method in tables and plots")
    turns: int = _f(1, "assistant turns per sample: > 1 = self-repair episodes answered by the task's feedback, "
                       "graded by their last turn; max_tokens is then the whole episode's budget")

    def __post_init__(self):
        at_least(self, n_problems=(0, "0 = all"), n_samples=(0, "0 = no sampled decoding"), max_tokens=1,
                 batch_size=1, shard_problems=1, turns=1, temperature=0.0)
        if not 0 < self.top_p <= 1:
            raise SettingError("top_p", self.top_p, "must be in (0, 1]")
        if self.n_samples and (not self.ks or any(k < 1 or k > self.n_samples for k in self.ks)):
            raise SettingError("ks", list(self.ks), f"each k must be within 1..n_samples ({self.n_samples})")
        if not self.splits:
            raise SettingError("splits", list(self.splits), "must name at least one split")


@dataclass
class SelfTrainConfig:
    """Settings of one ReST / Guided-ReST run (besides the SFT settings, ``rest_sft``)."""

    iterations: int = _f(3, "generate-filter-train iterations (the paper: 3)")
    guidance_rounds: int = _f(3, "Guided-ReST guidance rounds per generation (0 = ReST)")
    turns: int = _f(1, "assistant turns per episode: 1 = one response (Countdown); > 1 = self-repair episodes "
                       "answered by the task's feedback (code: 4 in the paper), guidance then inserts the reference")
    split: str = _f("selftrain", "the task's split the problems come from (Countdown: 'selftrain', never in "
                                 "the SFT base's training set)")
    n_problems: int = _f(2000, "problems sampled per iteration, the first N of the split (0 = all)")
    temperature: float = _f(1.0, "sampling temperature of the generation")
    max_tokens: int = _f(896, "response budget incl. any guided prefix (tokens)")
    from_base: bool = _f(True, "each iteration fine-tunes from the base checkpoint")
    shard_problems: int = _f(256, "problems per resumable generation shard")
    batch_size: int = _f(64, "rows decoded together by the sampler")
    seed: int = _f(0, "seed of the sampling and of the guide's random choices")

    #: settings added later, at the values that reproduce runs recorded before they existed
    RECORDED_DEFAULTS = {"split": "train"}

    def __post_init__(self):
        at_least(self, iterations=1, guidance_rounds=(0, "0 = ReST"), turns=1, n_problems=(0, "0 = all"),
                 max_tokens=1, shard_problems=1, batch_size=1, temperature=0.0)


@dataclass
class RestMCTSConfig:
    """Settings of ``searchrl rest-mcts`` (ReST-MCTS*'s self-training loop; its search is ``search.mcts_star``
    with the iterations and response limit below, each iteration's policy SFT the ``rest_sft`` section,
    each value model the ``value`` section)."""

    iterations: int = _f(2, "search-train iterations (the paper: 2)")
    split: str = _f("selftrain", "the task's split the questions come from (only their final answers are used)")
    n_problems: int = _f(200, "first N questions of the split (0 = all)")
    v0_problems: int = _f(2000, "gold solutions of the train split in the initial value data D_V0 (0 = all)")
    value_init: str = _f("", "an initial value model to start from instead of training V0 on D_V0")
    search_iterations: int = _f(12, "MCTS* iterations per question in data collection (the code: 100)")
    max_tokens: int = _f(256, "response length limit of the search (tokens)")
    per_problem: int = _f(4, "most correct end states (highest value first) kept per question for the policy")
    min_value: float = _f(0.0, "keep a correct end state for the policy only if its value is at least this")
    from_base: bool = _f(False, "fine-tune each iteration's policy from the base (the paper continues from the "
                                "previous iteration's model)")
    shard_problems: int = _f(50, "questions per resumable search shard")
    batch_size: int = _f(64, "rows decoded together by the sampler")
    seed: int = _f(0, "seed of the searches and of the corrupted steps")

    def __post_init__(self):
        at_least(self, iterations=(0, "0 = only the initial value model V0"), n_problems=(0, "0 = all"),
                 v0_problems=(0, "0 = all"), search_iterations=1, max_tokens=1, per_problem=1, shard_problems=1, batch_size=1)
        if self.iterations == 0 and self.value_init:
            raise SettingError("iterations", 0, "must be >= 1 with rest_mcts.value_init set (0 trains only V0, "
                                                "which value_init replaces)")


@dataclass
class RestGRPOConfig:
    """Settings of ``searchrl rest-grpo`` (ReST-RL Algorithm 1; each iteration's GRPO training is the
    ``grpo`` section, for one pass over the assembled prompts unless ``grpo_iterations`` says otherwise)."""

    method: str = _f("rest-grpo", "rest-grpo (sample, filter by reward std, add partial-solution prompts, GRPO) | "
                                  "grpo (every question, no filter: the baseline at equal steps) | rest-dpo (best "
                                  "vs worst sample of each question, DPO with the dpo section)")
    iterations: int = _f(2, "sample-filter-assemble-train iterations (the paper: 2)")
    split: str = _f("selftrain", "the task's split the questions come from (never a test split)")
    n_problems: int = _f(0, "first N questions of the split (0 = all)")
    samples: int = _f(8, "solutions sampled per question for the filter (the paper's N: 30), at grpo.temperature")
    sigma0: float = _f(0.05, "drop a question whose sampled rewards have std below this (reward)")
    r0: float = _f(0.9, "add partial states of the best solution when its reward is at least this (reward)")
    alpha: float = _f(0.95, "eq. 3: partial state j drawn with probability proportional to alpha^(j-1)")
    beta: float = _f(0.5, "eq. 3: ceil(beta * |A|) partial states per kept question with a good solution")
    grpo_iterations: int = _f(0, "rest-grpo: GRPO iterations per self-training iteration; 0 = one pass over the "
                                 "assembled prompts P_Q+, ceil(|P_Q+| / grpo.prompts_per_step) (Algorithm 1 line 19 "
                                 "trains on all of P_Q+). method=grpo runs grpo.iterations")
    shard_problems: int = _f(100, "questions per resumable sampling shard")
    seed: int = _f(0, "seed of the sampling and of the partial-state draws")

    def __post_init__(self):
        one_of(self, "method", ("rest-grpo", "grpo", "rest-dpo"))
        at_least(self, iterations=1, samples=(2, "a group needs two samples"), n_problems=(0, "0 = all"),
                 shard_problems=1, sigma0=0.0, grpo_iterations=(0, "0 = one pass over P_Q+"))
        for name in ("alpha", "beta"):
            if not 0 < getattr(self, name) <= 1:
                raise SettingError(name, getattr(self, name), "must be in (0, 1]")


#: where value-model data comes from (searchrl value-data --source ...)
VALUE_SOURCES = ("orm", "vgs", "vm-mcts", "mcts-star", "math-shepherd", "gold")


@dataclass
class ValueDataConfig:
    """Settings of the value-data makers (``searchrl value-data``); tree searches' own settings are
    ``search.vm_mcts`` / ``search.mcts_star``."""

    split: str = _f("selftrain", "the task's split the problems come from (never a test split)")
    n_problems: int = _f(500, "first N problems of the split (0 = all)")
    samples: int = _f(4, "orm: responses per problem; vgs: roll-ins (responses cut at a random token) per problem")
    rollouts: int = _f(2, "vgs: roll-outs sampled from each cut; math-shepherd: completions sampled from each step")
    temperature: float = _f(1.0, "sampling temperature of responses and roll-outs")
    max_tokens: int = _f(896, "response budget, roll-in included (tokens)")
    vm_mcts_problems: int = _f(0, "vm-mcts: first N problems of the split (0 = n_problems)")
    mcts_star_problems: int = _f(0, "mcts-star: first N problems of the split (0 = n_problems)")
    shepherd_problems: int = _f(0, "math-shepherd: first N problems of the split (0 = n_problems); with "
                                   "samples and rollouts it sets the PRM's data budget (summary.json: "
                                   "generated_tokens, as every maker's)")
    vm_mcts_iterations: int = _f(30, "vm-mcts: iterations T of Algorithm 2 per problem (the paper: 30); its other "
                                     "settings are search.vm_mcts's")
    mcts_star_iterations: int = _f(100, "mcts-star: iterations per problem (the code: 100); its other settings are "
                                        "search.mcts_star's")
    batch_size: int = _f(64, "rows decoded together by the sampler")
    shard_problems: int = _f(100, "problems per resumable shard")
    seed: int = _f(0, "seed of the sampling and of the cut positions")

    #: fields that only some makers read: the shard key names the values a maker used instead
    MAKER_FIELDS = ("vm_mcts_problems", "mcts_star_problems", "shepherd_problems", "vm_mcts_iterations",
                    "mcts_star_iterations", "batch_size", "shard_problems")

    def __post_init__(self):
        at_least(self, samples=1, rollouts=1, max_tokens=1, batch_size=1, shard_problems=1, vm_mcts_iterations=1,
                 mcts_star_iterations=1, n_problems=(0, "0 = all"), vm_mcts_problems=(0, "0 = n_problems"),
                 mcts_star_problems=(0, "0 = n_problems"), shepherd_problems=(0, "0 = n_problems"), temperature=0.0)


#: published PRM input conventions (searchrl.models.verifiers.CONVENTIONS) and how step scores make a state's
VERIFIER_CONVENTIONS = ("math-shepherd", "qwen-prm")
VERIFIER_AGGREGATES = ("min", "last", "prod")


@dataclass
class VerifierConfig:
    """How an off-the-shelf verifier given as a search scorer is read (searchrl.models.verifiers); our own value
    models ignore these. A field left '' takes the convention's value."""

    convention: str = _f("math-shepherd", "input convention of a PRM / reward model: math-shepherd (question, "
                                          "then each step followed by ' ки', labels + / -) | qwen-prm (chat "
                                          "template, steps joined by <extra_0>, class 1 positive)")
    separator: str = _f("", "text inserted after each step, where a PRM is read ('' = the convention's)")
    positive_label: str = _f("", "the positive class: an index or a label name; a causal-LM PRM's good token "
                                 "('' = the convention's: +, or 1; a one-label head is read through a sigmoid)")
    negative_label: str = _f("", "a causal-LM PRM's bad token ('' = the convention's: -)")
    format: str = _f("", "plain (question and steps as text) | chat (the verifier's chat template) ('' = the "
                         "convention's)")
    system: str = _f("", "system prompt of the chat format ('' = the convention's)")
    aggregate: str = _f("min", "a state's score from its step scores: min | last | prod")
    causal_lm: bool = _f(False, "read a causal LM given as a scorer as a Math-Shepherd PRM (good token's "
                                "probability among good / bad at each separator); otherwise a causal LM is refused")

    def __post_init__(self):
        one_of(self, "convention", VERIFIER_CONVENTIONS)
        one_of(self, "aggregate", VERIFIER_AGGREGATES)
        if self.format:
            one_of(self, "format", ("plain", "chat"))


@dataclass
class SearchConfig:
    """Settings of ``searchrl search`` and ``searchrl compare-search`` (the methods' own settings are
    the nested sections)."""

    split: str = _f("test_seen", "the task's split searched")
    n_problems: int = _f(100, "first N problems of the split (0 = all)")
    budgets: list[int] = _f([1024, 2048, 4096], "token budgets compared: generated tokens per problem")
    methods: list[str] = _f(["bon-oracle", "vote", "bon-orm", "bon-value", "weighted-vote", "orm-vote", "prm-min",
                             "prm-vote", "mcts-star-vote", "vm-mcts", "orm-mcts", "mcts-star", "bon-classifier",
                             "classifier-vote", "beam", "dvts"],
                            "methods compared (searchrl.search.registry)")
    value: str = _f("", "scalar value model (bon-value, weighted-vote, vm-mcts, mcts-star)")
    prm: str = _f("", "process reward model (prm-min): '' = made from Math-Shepherd step labels "
                      "(value-data --source math-shepherd), independently of the value model")
    mcts_star_value: str = _f("", "value model of mcts-star and mcts-star-vote ('' = made from MCTS* value "
                                  "targets, as ReST-MCTS* trains its own)")
    orm: str = _f("", "outcome reward model (bon-orm, orm-mcts). Every scorer setting takes a value-model "
                      "directory, an off-the-shelf verifier (*ForTokenClassification PRM, *ForSequenceClassification "
                      "reward model; read as search.verifier says) or a Hub name org/name[@revision]")
    classifier: str = _f("", "VGS 3-class value model (beam, dvts, bon-classifier, classifier-vote; '' = made "
                             "from VGS roll-outs)")
    pool_samples: int = _f(32, "sampling methods (bon-*, vote, prm-min): samples per problem, of which each "
                               "budget takes the first ones that fit")
    temperature: float = _f(1.0, "sampling methods: sampling temperature")
    top_p: float = _f(1.0, "sampling methods: nucleus sampling mass (VGS samples every row at top-p 0.95)")
    max_tokens: int = _f(896, "response length limit of every method (tokens)")
    batch_size: int = _f(64, "rows decoded together by the sampler")
    shard_problems: int = _f(25, "problems per resumable shard of the pool and of each tree search (the unit "
                                 "engine.workers fan out)")
    seed: int = _f(0, "seed of every method's sampling")
    keep_trees: int = _f(20, "problems whose search tree and chosen response are kept per (method, budget), the "
                             "first N, in methods/trees-<method>-<budget>.jsonl (0 = none, -1 = all; not part of "
                             "any result's key)")
    vm_mcts: VMMCTSConfig = field(default_factory=VMMCTSConfig)
    mcts_star: MCTSStarConfig = field(default_factory=MCTSStarConfig)
    beam: BeamConfig = field(default_factory=BeamConfig)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)

    def __post_init__(self):
        if not self.budgets or any(b < 1 for b in self.budgets):
            raise SettingError("budgets", list(self.budgets), "must be positive token counts")
        at_least(self, pool_samples=1, max_tokens=1, batch_size=1, shard_problems=1, n_problems=(0, "0 = all"),
                 temperature=0.0, keep_trees=(-1, "-1 = all"))
        if not 0 < self.top_p <= 1:
            raise SettingError("top_p", self.top_p, "must be in (0, 1]")
        unknown = [m for m in self.methods if not search_methods.known(m)]
        if unknown or not self.methods:
            raise SettingError("methods", list(self.methods),
                               f"each must be one of {' | '.join(search_methods.names())}")


DEMO_PPO_ROWS = ("sos", "rest", "guided-rest", "guided-rest-token")


@dataclass
class DemoConfig:
    ppo_rows: list[str] = _f(list(DEMO_PPO_ROWS),
                             "PPO rows of `searchrl demo`, each evaluated with the others: sos, rest, guided-rest "
                             "(operation-level PPO from that model) and guided-rest-token (token-level PPO from "
                             "Guided-ReST, the paper's ablation)")

    def __post_init__(self):
        for row in self.ppo_rows:
            if row not in DEMO_PPO_ROWS:
                raise SettingError("ppo_rows", list(self.ppo_rows), f"each must be one of {' | '.join(DEMO_PPO_ROWS)}")
        if len(set(self.ppo_rows)) != len(self.ppo_rows):
            raise SettingError("ppo_rows", list(self.ppo_rows), "names a row twice")


@dataclass
class Config:
    run_dir: str = _f("runs/default", "run directory: every output of the command goes here")
    seed: int = _f(0, "global seed (initial weights of models created from scratch)")
    task: Any = _f(None, "the task and its settings (task.name picks it; its fields are listed below)")
    data_dir: str = _f("", "existing data directory of the task ('' = <run_dir>/data, prepared if missing)")
    model: ModelConfig = field(default_factory=ModelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    sft: SFTConfig = field(default_factory=lambda: SFTConfig(output_dir=""))
    eval: EvalConfig = field(default_factory=EvalConfig)
    selftrain: SelfTrainConfig = field(default_factory=SelfTrainConfig)
    rest_sft: SFTConfig = field(default_factory=lambda: SFTConfig(output_dir="", warmup_steps=20, epochs=2.0))
    value_data: ValueDataConfig = field(default_factory=ValueDataConfig)
    value: ValueTrainConfig = field(default_factory=lambda: ValueTrainConfig(output_dir=""))
    search: SearchConfig = field(default_factory=SearchConfig)
    ppo: RLConfig = field(default_factory=lambda: RLConfig(output_dir=""))
    grpo: RLConfig = field(default_factory=lambda: RLConfig(
        output_dir="", adv_estimator="grpo", samples_per_prompt=8, prompts_per_step=8, loss_agg="seq-mean-action-mean",
        dual_clip=None))
    rest_grpo: RestGRPOConfig = field(default_factory=RestGRPOConfig)
    rest_mcts: RestMCTSConfig = field(default_factory=RestMCTSConfig)
    dpo: DPOConfig = field(default_factory=lambda: DPOConfig(output_dir=""))
    demo: DemoConfig = field(default_factory=DemoConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    base_model: str = _f("", "start self-training from this checkpoint instead of training the SFT base "
                         "('' = train it into <run_dir>/sft; builtin:NAME = shipped in searchrl/presets)")

    def __post_init__(self):
        if self.task is None:
            from .tasks import DEFAULT_TASK, task_config_class

            self.task = task_config_class(DEFAULT_TASK)()


class ConfigError(InputError):
    pass


# ---------------------------------------------------------------------------- sources


class _Source:
    """One layer of settings (a recipe file, a recorded config, the command line) and how to name it."""

    def __init__(self, name: str, data: dict, path: Path | None = None, text: str | None = None):
        self.name, self.data, self.path, self.text = name, data, path, text

    def where(self, dotted: str | None) -> str:
        if self.path is not None and self.text is not None and dotted:
            line = _yaml_line(self.text, dotted.split("."))
            if line is not None:
                return f"{self.path}:{line}"
        return self.name


def _yaml_line(text: str, keys: list[str]) -> int | None:
    """1-based line of the (deepest existing) key ``keys`` in a YAML document."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            break
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                line, node = k.start_mark.line + 1, v
                break
        else:
            break
    return line


def _migrate_report_to(d: dict) -> dict:
    """Each trainer section's own ``report_to`` (``sft.report_to``, ``ppo.report_to``, ...: before one
    ``tracking`` section served every stage of a command) moved into ``tracking.report_to``, the names of
    all of them joined."""
    names: list[str] = []
    for key, section in list(d.items()):
        if key != "tracking" and isinstance(section, dict) and "report_to" in section:
            section = dict(section)
            names += [n.strip() for n in str(section.pop("report_to") or "").split(",") if n.strip()]
            d[key] = section
    if names:
        tracking = dict(d.get("tracking") or {})
        given = [n.strip() for n in str(tracking.get("report_to") or "").split(",") if n.strip()]
        tracking["report_to"] = ",".join(dict.fromkeys(given + names))
        d["tracking"] = tracking
    return d


def _migrate(d: Any) -> Any:
    """Settings in an older layout moved to where they are now: ``data`` -> ``task`` (written before
    tasks had a config section), then the task's own old settings, by its config's ``migrate`` hook
    (the task this layer names, else the default one; see :mod:`searchrl.tasks.base`)."""
    from .tasks import DEFAULT_TASK, named_task_config

    if not isinstance(d, dict):
        return d
    d = dict(d)
    if "data" in d and "task" not in d:
        d["task"] = {"name": DEFAULT_TASK, **(d.pop("data") or {})}
    d = _migrate_report_to(d)
    migrate = getattr(named_task_config(d.get("task")), "migrate", None)
    return migrate(d) if migrate is not None else d


def _migrate_recorded(d: Any) -> Any:
    """A recorded config (a full dump of every setting, so a missing key did not exist yet) from
    before self-training had its own split: self-training read ``train``; a task's settings added
    since take the values its ``RECORDED_DEFAULTS`` gives (Countdown: no ``selftrain`` or
    ``valid_unseen`` problems). Keeps such run directories working as they were."""
    d = _migrate(d)
    if not isinstance(d, dict):
        return d
    st = d.get("selftrain")
    if isinstance(st, dict) and "iterations" in st:
        d["selftrain"] = {**SelfTrainConfig.RECORDED_DEFAULTS, **st}
    task = d.get("task")
    if isinstance(task, dict):
        from .tasks import named_task_config

        task_cls = named_task_config(task)
        if task_cls is not None:  # settings the task added later, at the value that reproduces the old run
            d["task"] = {**getattr(task_cls, "RECORDED_DEFAULTS", {}), **task}
    return d


RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


def list_recipes() -> list[tuple[str, str]]:
    """The shipped recipes (package data, so a wheel has them): ``(name, summary)`` per recipe, where
    ``name`` is ``task/recipe`` (what ``--config`` accepts) and the summary is the first sentence of
    the recipe's opening comment, cut to about 100 characters."""
    out = []
    for path in sorted(RECIPES_DIR.glob("*/*.yaml")):
        lines = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            text = line.lstrip("#").strip()
            if not text:
                break
            lines.append(text)
        summary = " ".join(lines)
        end = summary.find(". ")
        summary = summary[: end + 1] if end >= 0 else summary
        if len(summary) > 100:
            summary = summary[:99].rsplit(" ", 1)[0].rstrip(",;:(") + " …"
        out.append((f"{path.parent.name}/{path.stem}", summary))
    return out


def recipe_path(name: str | os.PathLike) -> Path:
    """A recipe file: ``name`` as a path when it exists, else a shipped recipe's name
    (``countdown/sos-tiny``, with or without ``.yaml``, or with a leading ``recipes/``)."""
    path = Path(name)
    if path.exists():
        return path
    stem = str(name).removeprefix("recipes/").removesuffix(".yaml")
    shipped = RECIPES_DIR / f"{stem}.yaml"
    if "/" in stem and ".." not in stem and shipped.is_file():
        return shipped
    raise ConfigError(f"{name}: no such recipe file, and no shipped recipe of that name (`searchrl recipes` "
                      f"lists them)")


def read_recipe(path: str | os.PathLike) -> _Source:
    path = recipe_path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: a recipe is a mapping of settings, got {type(data).__name__}")
    return _Source(str(path), _migrate(data), path, text)


def _overrides_source(overrides: list[str]) -> _Source:
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"command line: overrides look like key=value, got {bad}")
    try:
        data = OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as e:
        raise ConfigError(f"command line: {str(e).splitlines()[0]}") from None
    return _Source("command line", _migrate(data))


def _keys(cfg: Any, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out += _keys(value, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def _task_name(sources: list[_Source]) -> str:
    from .tasks import DEFAULT_TASK

    name = DEFAULT_TASK
    for s in sources:
        t = s.data.get("task")
        if isinstance(t, dict) and t.get("name") is not None:
            name = str(t["name"])
    return name


def load_config(path: str | os.PathLike | list | None = None, overrides: list[str] | None = None,
                cls: type = Config, base: dict | None = None, base_name: str = "recorded config") -> Any:
    """Settings in layers, later ones winning: the dataclass defaults, ``base`` (a recorded
    config, as a dict), the recipe YAML file(s) ``path``, then ``key=value`` ``overrides``."""
    paths = path if isinstance(path, list) else ([] if path is None else [path])
    sources = ([_Source(base_name, _migrate_recorded(base))] if base is not None else [])
    sources += [read_recipe(p) for p in paths]
    if overrides:
        sources.append(_overrides_source(list(overrides)))
    schema = OmegaConf.structured(cls)
    if cls is Config:
        from .tasks import task_config_class

        try:
            task_cls = task_config_class(_task_name(sources))
        except ValueError as e:
            raise ConfigError(f"task.name: {e}") from None
        schema.task = OmegaConf.structured(task_cls)
    known = _keys(cls()) if cls is not Config else None
    for s in sources:
        try:
            schema = OmegaConf.merge(schema, s.data)
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or ""
            first = str(e).splitlines()[0]
            if "not in" in first and key:
                known = known or _keys(OmegaConf.to_object(schema))
                close = difflib.get_close_matches(key, known, n=1)
                msg = f"{key}: no such setting" + (f" (did you mean {close[0]}?)" if close else "")
            else:
                msg = f"{key}: {first}" if key else first
            raise ConfigError(f"{s.where(key)}: {msg}") from None
    try:
        return OmegaConf.to_object(schema)
    except (OmegaConfBaseException, ValueError) as e:  # e.g. a dataclass's own __post_init__ check
        section = _failing_section(schema)
        if isinstance(e, SettingError):  # one key: name it in full, and where it was set
            key = f"{section}.{e.key}" if section else e.key
            msg = f"{key} = {e.value!r}: {e.allowed}"
        else:
            key, msg = section, f"{section + ': ' if section else ''}{str(e).splitlines()[0]}"
        where = next((s.where(k) for k in (key, section) for s in reversed(sources) if k and _has(s.data, k)), None)
        raise ConfigError(f"{where or ', '.join(s.name for s in sources) or 'defaults'}: {msg}") from None


def _has(d: Any, dotted: str) -> bool:
    from .rundir import MISSING, lookup

    return lookup(d, dotted) is not MISSING


def _failing_section(schema, prefix: str = "") -> str | None:
    """The deepest section (dotted) whose dataclass refuses its values, to name it in the error."""
    for key in schema:
        node = schema[key]
        if OmegaConf.is_config(node) and not isinstance(node, ListConfig):
            try:
                OmegaConf.to_object(node)
            except (OmegaConfBaseException, ValueError):
                return _failing_section(node, f"{prefix}{key}.") or f"{prefix}{key}"
    return None


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)
