"""Settings of the searches and of their comparison, as dataclasses without importing torch.

The run config (:mod:`searchrl.config`) nests them (``search.vm_mcts.c_decode=...``) and
``searchrl <command> --help`` lists them, so they live apart from the search code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import bon


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
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (the paper: 0.7) (ratio)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling threshold (probability)"})
    max_tokens: int = field(default=512, metadata={"help": "response length limit of a state (tokens)"})
    seed: int = field(default=0, metadata={"help": "seed of the sampling, per problem, node and iteration (integer)"})
    select: str = field(default="best", metadata={
        "help": "final choice among the sampled traces: best | vote | weighted-vote (choice)"})
    keep_tree: bool = field(default=False, metadata={
        "help": "keep each decoding tree's nodes in SearchResult.meta['tree'] (flag)"})

    def __post_init__(self):
        if self.iterations < 0 or self.n < 1 or self.max_tokens < 1:
            raise ValueError(f"need iterations >= 0, n >= 1, max_tokens >= 1; got {self.iterations}, {self.n}, "
                             f"{self.max_tokens}")
        if self.eps <= 0 or self.c_collect < 0 or self.c_decode < 0:
            raise ValueError(f"need eps > 0 and c >= 0; got eps={self.eps}, c_collect={self.c_collect}, "
                             f"c_decode={self.c_decode}")
        if self.select not in bon.SELECTIONS:
            raise ValueError(f"select must be one of {' | '.join(bon.SELECTIONS)}, got {self.select!r}")
