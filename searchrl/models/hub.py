"""Models by Hugging Face Hub name: ``org/name`` or ``org/name@revision``, through huggingface_hub's cache.

Wherever a model directory is accepted (``model.name``, ``base_model``, ``--model``, ``search.value``,
``search.prm``, ...), a Hub name is too. It resolves to the snapshot directory that
``huggingface_hub.snapshot_download`` keeps in the cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``~/.cache/huggingface/hub``: the layout ``models--org--name/{blobs,refs/<branch>,snapshots/<commit>/...}``),
and from then on the model is that local directory. The environment is read at each call (not when
huggingface_hub was imported), so a test or a shell that sets ``HF_HOME`` / ``HF_HUB_OFFLINE`` later is
obeyed:

* offline (``HF_HUB_OFFLINE=1``, or ``TRANSFORMERS_OFFLINE=1``, as huggingface_hub reads them): only the
  cache is looked at; a model not there is one line naming the model, the cache and the command that
  fetches it (:class:`HubError`);
* online: ``snapshot_download`` fetches what is missing (config, tokenizer, ``*.safetensors``, and
  ``*.bin`` only when a repository has no safetensors: not the ``original/`` consolidated checkpoints some
  repositories also carry) and asks the Hub what a branch points to now. A revision that is a commit hash
  already in the cache is served from it without a request.

A local path that exists always wins over a Hub name (``runs/x`` is a directory when there is one), and a
name with more than one ``/`` or starting with ``/ . ~`` is never a Hub name. A Hub model's identity (what
run records and shard keys hold, :func:`hub_identity`) is ``org/name@<commit>``: results are keyed by the
revision that made them, and a branch that moves gives new keys.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..data import InputError

_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_COMMIT = re.compile(r"[0-9a-f]{40}")
#: what is fetched of a repository: a model's config, tokenizer and weights (see module docs)
ALLOW = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


class HubError(InputError):
    """A Hub name that cannot be resolved (not cached while offline, unknown repository or revision)."""


def parse_hub_name(name: str | os.PathLike) -> tuple[str, str | None] | None:
    """``(repo_id, revision or None)`` when ``name`` is a Hub name and no local path of that name exists,
    else None (see module docs)."""
    s = str(name)
    if not s or s.startswith(("/", ".", "~", "builtin:")) or os.path.exists(s):
        return None
    repo, at, rev = s.partition("@")
    if not _REPO.fullmatch(repo) or "--" in repo or ".." in repo or repo.endswith(".git"):
        return None
    if at and (not rev or any(c.isspace() for c in rev)):
        return None
    return repo, rev or None


def is_hub_name(name: str | os.PathLike) -> bool:
    return parse_hub_name(name) is not None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_offline() -> bool:
    """True when huggingface_hub would refuse network access (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    return _truthy(os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE"))


def hub_cache_dir() -> Path:
    """The Hub cache, from the environment now, as huggingface_hub's constants define it."""
    env = os.environ
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def fetch_command(repo_id: str, revision: str | None = None) -> str:
    """The shell command that puts the model in the cache (``hf``: huggingface_hub's CLI since 1.0)."""
    return f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")


@dataclass(frozen=True)
class HubModel:
    """A resolved Hub name: the repository, the revision asked for (None: the default branch), the commit
    it is at, and its snapshot directory in the cache."""

    repo_id: str
    revision: str | None
    commit: str
    path: Path

    @property
    def identity(self) -> str:
        return f"{self.repo_id}@{self.commit}"


_resolved: dict[tuple, HubModel] = {}


def resolve_hub(name: str | os.PathLike) -> HubModel:
    """The snapshot of Hub name ``name`` (see module docs); fetched when online and missing. Resolved once
    per process for each (name, cache, offline), so a run's many checks ask the Hub at most once."""
    parsed = parse_hub_name(name)
    if parsed is None:
        raise ValueError(f"{name}: not a Hub name (org/name or org/name@revision)")
    repo, rev = parsed
    cache, offline = hub_cache_dir(), hub_offline()
    key = (repo, rev, str(cache), offline)
    if key in _resolved and _resolved[key].path.is_dir():
        return _resolved[key]
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RevisionNotFoundError

    where = f"HF_HUB_CACHE={cache}"
    try:
        path = None
        if offline or (rev is not None and _COMMIT.fullmatch(rev)):
            try:
                # (the patterns: a snapshot fetched with `hf download --include` what we read is complete)
                path = snapshot_download(repo, revision=rev, cache_dir=str(cache), local_files_only=True,
                                         allow_patterns=ALLOW)
            except LocalEntryNotFoundError:
                if offline:
                    raise
        if path is None:
            path = snapshot_download(repo, revision=rev, cache_dir=str(cache), allow_patterns=ALLOW)
            if not any(p.suffix == ".safetensors" for p in Path(path).iterdir()):
                path = snapshot_download(repo, revision=rev, cache_dir=str(cache), allow_patterns=[*ALLOW, "*.bin"])
    except LocalEntryNotFoundError as e:
        if offline:
            raise HubError(f"{name}: no local directory of that name, and not in the Hugging Face cache ({where}) "
                           f"while HF_HUB_OFFLINE=1; fetch it with: {fetch_command(repo, rev)}") from None
        raise HubError(f"{name}: not in the Hugging Face cache ({where}) and the Hub could not be reached "
                       f"({type(e).__name__}); fetch it with: {fetch_command(repo, rev)}") from None
    except RevisionNotFoundError:
        raise HubError(f"{name}: the Hub repository {repo} has no revision {rev!r}") from None
    except HfHubHTTPError as e:
        raise HubError(f"{name}: no local directory of that name, and the Hub refused it "
                       f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    path = Path(path)
    model = HubModel(repo, rev, path.name, path)
    _resolved[key] = model
    return model


def hub_identity(name: str | os.PathLike) -> str | None:
    """``org/name@<commit>`` for a Hub name (resolved), else None."""
    return resolve_hub(name).identity if is_hub_name(name) else None


def hub_snapshot_identity(path: str | os.PathLike) -> str | None:
    """``org/name@<commit>`` for a path inside the Hub cache (``.../models--org--name/snapshots/<commit>``),
    else None: a resolved Hub model keeps its identity wherever its path is passed on."""
    p = Path(path)
    if p.parent.name == "snapshots" and p.parent.parent.name.startswith("models--") and _COMMIT.fullmatch(p.name):
        repo = p.parent.parent.name[len("models--"):].replace("--", "/", 1)
        if _REPO.fullmatch(repo):
            return f"{repo}@{p.name}"
    return None


__all__ = ["HubError", "HubModel", "parse_hub_name", "is_hub_name", "hub_offline", "hub_cache_dir", "fetch_command",
           "resolve_hub", "hub_identity", "hub_snapshot_identity", "ALLOW"]
