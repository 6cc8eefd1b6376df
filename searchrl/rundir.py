"""The run-directory protocol: recorded config, stages, keyed shards, relative paths.

A run directory holds everything one experiment made. Three rules keep it honest:

* **A command on an existing run directory starts from the config it recorded**
  (``config.yaml``), with the command line's overrides on top, so ``searchrl eval
  --run-dir R`` evaluates R as it was made.
* **A stage records what it depends on.** :class:`Stage` writes ``stage.json`` into the
  stage's directory when it starts (the subset of the config it depends on, the input
  model included) and marks it done when it finishes, last. A later command whose
  settings differ in a key the stage depends on is refused with the differing keys named;
  a setting that only a later stage reads (``eval.n_samples``) is not a difference.
* **Generated shards are keyed by what produced them** (:func:`shard_key`: model
  fingerprint, sampling settings, seed, problems), so a changed model or setting writes
  new shards instead of reusing stale ones.

Paths written into a run directory are relative to it (:func:`rel` / :func:`resolve`), so a
run directory copied or moved elsewhere still works.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml

from .data import read_json, write_json, write_text

CONFIG_FILE = "config.yaml"
STAGE_FILE = "stage.json"


class RunDirError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- config


def recorded_config(run_dir: str | os.PathLike) -> dict | None:
    """The config a run directory recorded (``None`` for a new directory)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        return None
    try:
        rec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RunDirError(f"{path}: unreadable recorded config ({str(e).splitlines()[0]})") from None
    if not isinstance(rec, dict):
        raise RunDirError(f"{path}: the recorded config is not a mapping of settings; restore it or use "
                          f"another --run-dir")
    rec.pop("run_dir", None)  # where the directory is now is what counts
    return rec


def check_run_dir(run_dir: str | os.PathLike) -> None:
    """Refuse, in one line, a run directory that cannot be one: a file, a path under a file, or a
    place this process cannot write (probed with a temporary file, which also catches a read-only
    file system, and permissions that root ignores in ``os.access``). Writes nothing that stays."""
    import tempfile

    path = Path(run_dir)
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                where = "is a file" if p == path else f"is under {p}, which is a file"
                raise RunDirError(f"{path}: {where}, not a directory; use another --run-dir")
            break
    try:
        with tempfile.TemporaryFile(dir=p, prefix=".searchrl-probe-"):
            pass
    except OSError as e:
        what = "the run directory" if p == path else f"{p}, where the run directory would be made,"
        raise RunDirError(f"{path}: {what} is not writable ({e.strerror}); use another --run-dir") from None


def record_config(run_dir: str | os.PathLike, config: dict) -> None:
    d = {k: v for k, v in config.items() if k != "run_dir"}
    write_text(Path(run_dir) / CONFIG_FILE, yaml.safe_dump(d, sort_keys=True))


# ------------------------------------------------------------------------------ paths


def rel(base: str | os.PathLike, path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """``path`` to write into a file under ``base``: relative to ``base`` when ``path`` lies inside
    the run directory ``root`` (default ``base``; ``../sft/final`` is fine), else absolute.

    Relative paths keep working when the run directory is copied or moved; a path outside it
    (a shipped checkpoint, another run) is kept absolute.
    """
    p = Path(path).resolve()
    r = Path(root if root is not None else base).resolve()
    if p == r or r in p.parents:
        return os.path.relpath(p, Path(base).resolve())
    return str(p)


def resolve(run_dir: str | os.PathLike, stored: str | os.PathLike) -> Path:
    """A path read from a run directory: relative ones are relative to the run directory."""
    p = Path(stored)
    return p if p.is_absolute() else Path(run_dir) / p


# ----------------------------------------------------------------------------- stages


MISSING = object()  # a key that is not there


def diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts. A section on one side only is
    compared key by key against nothing, so an absent section and an empty one are no difference,
    and a stage's ``defaults`` apply to each of its keys."""
    if isinstance(old, dict) or isinstance(new, dict):
        old, new = ({} if old is MISSING else old), ({} if new is MISSING else new)
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += diff_keys(old.get(k, MISSING), new.get(k, MISSING), f"{prefix}{k}.")
        return out
    return [] if _same(old, new) else [prefix.rstrip(".")]


def _same(a: Any, b: Any) -> bool:
    # JSON turns tuples into lists; compare as JSON would store them
    return json.loads(json.dumps(a, default=str)) == json.loads(json.dumps(b, default=str)) \
        if a is not MISSING and b is not MISSING else a is b


class Stage:
    """One stage of a run directory (see the module doc).

    ``depends`` is the subset of the settings the stage's output depends on (JSON-able);
    ``defaults`` optionally gives the value a key had before it existed, so a run directory
    made by an older searchrl is not refused for a key added since at its default.
    """

    def __init__(self, path: str | os.PathLike, depends: dict, name: str | None = None,
                 defaults: dict | None = None):
        self.path = Path(path)
        self.name = name or self.path.name
        self.depends = json.loads(json.dumps(depends, default=str))
        self.defaults = defaults or {}
        self.file = self.path / STAGE_FILE

    def record(self) -> dict | None:
        return read_json(self.file) if self.file.exists() else None

    def started(self) -> bool:
        """Whether the stage has produced anything yet (besides its own record)."""
        return self.path.is_dir() and any(p.name != STAGE_FILE for p in self.path.iterdir())

    def check(self) -> None:
        """Refuse when the stage was started with settings that differ from ``depends``.

        A record whose stage produced nothing yet (it failed before its first output) is no
        conflict: the stage is simply begun again with the new settings.
        """
        rec = self.record()
        if rec is None or (not rec.get("done") and not self.started()):
            return
        old = rec.get("depends", {})
        diff = [k for k in diff_keys(old, self.depends)
                if not (lookup(old, k) is MISSING and lookup(self.depends, k) == self.defaults.get(k, MISSING))]
        if diff:
            shown = ", ".join(f"{k} ({_show(lookup(old, k))} -> {_show(lookup(self.depends, k))})" for k in diff[:8])
            raise RunDirError(
                f"{self.path} ({self.name}) was made with a different config: {shown}. Use another --run-dir, "
                f"restore those settings, or delete {self.path} to redo this stage.")

    @property
    def done(self) -> bool:
        rec = self.record()
        return bool(rec and rec.get("done"))

    def begin(self) -> None:
        """Check, then record the stage's settings (the stage is now in progress)."""
        self.check()
        rec = self.record()
        if rec is None or (not rec.get("done") and not self.started()):
            write_json(self.file, {"stage": self.name, "done": False, "depends": self.depends})

    def finish(self, **info: Any) -> None:
        """Mark the stage done (written last, after every output of the stage)."""
        write_json(self.file, {"stage": self.name, "done": True, "depends": self.depends, **info})

    def info(self) -> dict:
        return self.record() or {}


def flat_defaults(prefix: str, obj: Any) -> dict:
    """``{"prefix.key": default}`` for every field of a dataclass instance (nested ones flattened):
    the ``defaults`` of a :class:`Stage` whose ``depends[prefix]`` is that dataclass."""
    import dataclasses

    out = {}
    for k, v in dataclasses.asdict(obj).items():
        if isinstance(v, dict):
            out.update({f"{prefix}.{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[f"{prefix}.{k}"] = v
    return json.loads(json.dumps(out, default=str))


def trajectory_settings(train_cfg: Any) -> dict:
    """The settings of a trainer config that change what it trains (its ``trajectory_fields``,
    plus the precision): what a stage that trains depends on."""
    keys = tuple(getattr(train_cfg, "trajectory_fields", ())) + ("mixed_precision",)
    lora = train_cfg.lora_settings() if hasattr(train_cfg, "lora_settings") else {}
    return {**{k: getattr(train_cfg, k) for k in keys if hasattr(train_cfg, k)}, **({"lora": lora} if lora else {})}


def lookup(d: Any, dotted: str) -> Any:
    """``d["a"]["b"]`` for ``"a.b"``, or :data:`MISSING`."""
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return MISSING
        d = d[part]
    return d


def _show(v: Any) -> str:
    return "unset" if v is MISSING else json.dumps(v, default=str)


# ------------------------------------------------------------------------ identities


def shard_key(**what: Any) -> str:
    """A short digest of what produced a set of shards (canonical JSON of ``what``)."""
    text = json.dumps(what, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def problems_digest(problems: list[dict]) -> str:
    return hashlib.sha256(json.dumps(problems, sort_keys=True, default=str).encode()).hexdigest()[:16]


_FULL_HASH_BYTES = 512 << 20  # files above this are identified by size and sampled chunks
_fingerprints: dict[tuple, str] = {}


def model_fingerprint(path: str | os.PathLike) -> str:
    """The identity of a model directory's contents (config and weights), not of its path.

    Weight files up to 512 MB are hashed whole; larger ones by their size and three
    1 MB chunks (start, middle, end), so a 7B checkpoint costs milliseconds. A copied
    directory has the same fingerprint; a retrained one a different one.
    """
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file() and (
        p.suffix in (".safetensors", ".bin", ".pt") or p.name in ("config.json", "tokenizer.json")))
    stat_key = (str(path.resolve()), tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if stat_key in _fingerprints:
        return _fingerprints[stat_key]
    h = hashlib.sha256()
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.name}:{size}:".encode())
        with open(p, "rb") as f:
            if size <= _FULL_HASH_BYTES:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
            else:
                for off in (0, size // 2, size - (1 << 20)):
                    f.seek(off)
                    h.update(f.read(1 << 20))
    _fingerprints[stat_key] = h.hexdigest()[:16]
    return _fingerprints[stat_key]
