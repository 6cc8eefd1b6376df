"""Settings of the searches, as dataclasses without importing torch.

The run config (:mod:`searchrl.config`) nests them (``search.vm_mcts.c_decode=...``) and
``searchrl <command> --help`` lists them, so they live apart from the search code. Which methods
exist, and which of these sections each reads, is the registry's (:mod:`.registry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..settings import SettingError, at_least
from . import bon

ROLLOUT_CHILDREN = ("best", "all")  # MCTS*: which new children are rolled out


@dataclass
class VMMCTSConfig:
    """Settings of VM-MCTS value-target collection (Alg. 2) and decoding (Alg. 3); defaults: paper A.2."""

    iterations: int = field(default=30, metadata={"help": "search iterations T per problem (iterations)"})
    n: int = field(default=5, metadata={"help": "traces sampled per expansion (samples)"})
    c_collect: float = field(default=0.4, metadata={
        "help": "UCT exploration constant when collecting value targets, Alg. 2 (dimensionless)"})
    c_decode: float = field(default=0.1, metadata={
        "help": "UCT exploration constant when decoding, Alg. 3 (dimensionless)"})
    eps: float = field(default=0.1, metadata={"help": "UCT constant avoiding a division by zero (visits)"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature (the paper's 0.7) (ratio)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling threshold (probability)"})
    max_tokens: int = field(default=512, metadata={"help": "response length limit of a state (tokens)"})
    seed: int = field(default=0, metadata={"help": "seed of the sampling, per problem, node and iteration (integer)"})
    select: str = field(default="best", metadata={
        "help": "final choice among the sampled traces: best | vote | weighted-vote (choice)"})
    keep_tree: bool = field(default=False, metadata={
        "help": "keep each decoding tree's nodes in SearchResult.meta['tree'] (flag)"})

    def __post_init__(self):
        at_least(self, iterations=0, n=1, max_tokens=1, c_collect=0.0, c_decode=0.0, temperature=0.0)
        if self.eps <= 0 or self.c_collect < 0 or self.c_decode < 0:
            raise ValueError(f"need eps > 0 and c >= 0; got eps={self.eps}, c_collect={self.c_collect}, "
                             f"c_decode={self.c_decode}")
        if self.select not in bon.SELECTIONS:
            raise ValueError(f"select must be one of {' | '.join(bon.SELECTIONS)}, got {self.select!r}")


@dataclass
class MCTSStarConfig:
    """Settings of MCTS* (defaults: the authors' ``evaluate.py``)."""

    iterations: int = field(default=100, metadata={"help": "search iterations per problem (select, expand, "
                                                           "roll out, back up)"})
    branch: int = field(default=3, metadata={"help": "lines sampled per expansion (children; duplicates merge)"})
    c: float = field(default=0.4, metadata={"help": "UCT exploration constant"})
    inf: float = field(default=0.8, metadata={"help": "bonus of a never-visited child in UCT (value units)"})
    end_gate: float = field(default=0.9, metadata={"help": "a selected leaf with at least this value ends the "
                                                           "search (value units; ignored when collecting data)"})
    roll_forward_steps: int = field(default=2, metadata={"help": "lines per rollout (lines)"})
    alpha: float = field(default=0.5, metadata={"help": "weight of the rollout's best value in the child's value"})
    rollout_children: str = field(default="best", metadata={"help": "which new children are rolled out: best "
                                                                    "(the one UCT picks, as the code) | all"})
    rollout_greedy: bool = field(default=False, metadata={
        "help": "rollout lines at temperature 0 instead of sampled at `temperature` (the code's greedyPolicy keeps "
                "the best of roll_branch = 1 sampled proposal, i.e. samples) (flag)"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature of expansions"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling threshold of expansions"})
    max_tokens: int = field(default=512, metadata={"help": "response length limit (tokens); a state this long "
                                                           "is an end state"})
    max_line_tokens: int = field(default=64, metadata={"help": "longest line generated (tokens)"})
    step_lines: int = field(default=1, metadata={
        "help": "actions (lines) per tree step, in expansions and rollouts: a ReST-MCTS* step is one reasoning "
                "step; long traces need several lines per step for the tree to reach an end (lines)"})
    seed: int = field(default=0, metadata={"help": "seed of the sampling (per problem, node and iteration)"})
    select: str = field(default="best", metadata={"help": "final response: best (the node over the end gate, "
                                                          "else the best leaf) | weighted-vote | vote"})

    def __post_init__(self):
        if self.select not in bon.SELECTIONS:
            raise ValueError(f"select must be one of {' | '.join(bon.SELECTIONS)}, got {self.select!r}")
        if self.rollout_children not in ROLLOUT_CHILDREN:
            raise ValueError(f"rollout_children must be best | all, got {self.rollout_children!r}")
        at_least(self, branch=1, max_tokens=1, max_line_tokens=1, step_lines=1, iterations=0, roll_forward_steps=0,
                 temperature=0.0)
        if not 0.0 <= self.alpha <= 1.0:
            raise SettingError("alpha", self.alpha, "must be in [0, 1]")


@dataclass
class BeamConfig:
    """Settings of VGS block-wise beam search and DVTS (see module docs)."""

    num_blocks: int = field(default=8, metadata={"help": "N: candidate blocks sampled per step and search (blocks)"})
    width: int = field(default=2, metadata={"help": "w: blocks sampled per active beam; N / w beams (blocks)"})
    block_size: int = field(default=32, metadata={
        "help": "most tokens of one block (tokens; VGS uses 4096, 32 suits tiny policies)"})
    max_tokens: int = field(default=512, metadata={"help": "response length limit (tokens; VGS uses 16384)"})
    temperature: float = field(default=0.6, metadata={"help": "sampling temperature of blocks"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling mass of blocks"})
    reps: int = field(default=1, metadata={"help": "DVTS: independent searches per problem, outputs pooled (searches)"})
    seed: int = field(default=0, metadata={"help": "seed every request's sampling seed derives from"})
    select: str = field(default="weighted-vote", metadata={
        "help": "final choice over the pooled outputs: best | vote | weighted-vote"})

    def __post_init__(self):
        at_least(self, num_blocks=1, width=1, block_size=1, max_tokens=1, reps=1)
        if self.num_blocks % self.width:
            raise ValueError(f"num_blocks ({self.num_blocks}) must be divisible by width ({self.width})")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.select not in bon.SELECTIONS:
            raise ValueError(f"unknown select {self.select!r}; known: {', '.join(bon.SELECTIONS)}")

    @property
    def beams(self) -> int:
        """Beams per search (``num_blocks / width``)."""
        return self.num_blocks // self.width
