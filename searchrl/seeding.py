"""Seeds derived from names, so a random choice does not depend on batching or sharding.

A request's seed is a hash of what identifies it (run seed, split, iteration, round,
problem index), never a draw from a shared generator: regenerating one shard after a
crash, or batching requests differently, gives the same samples.
"""

from __future__ import annotations

import hashlib


def stable_seed(*parts: object) -> int:
    """A non-negative 31-bit integer determined by ``parts`` (order matters)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
