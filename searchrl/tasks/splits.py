"""What tasks with prepared data directories share: the split files, and drawing synthetic splits.

* :class:`SplitFiles`: a task whose ``prepare`` writes ``<data_dir>/<split>.jsonl`` files, then
  ``config.json`` (the data settings) and ``stats.json`` last (a directory without it is not
  trusted). Splits read from a user's files (:func:`files_as_splits`) are checked record by record
  before anything is written, each error naming the user's file, line and field; ``sources.json``
  then keeps where every record came from. It reads the splits back with every record checked by
  the task's ``_validate(rec, path, line)`` (a bad one is a file:line:field error) and remembers
  each record's line for :meth:`where`.
* :func:`draw_splits`: synthetic splits drawn problem by problem, unique across splits, the
  held-out splits first (so adding problems to a later split never changes an earlier one), each
  split from its own named random stream.
* :data:`COMPOSITION_SPLITS` / :data:`COMPOSITION_TITLES`: the splits of a synthetic task with
  held-out compositions, and how reports title them.
* :func:`hub_splits`: a published dataset in its own Hugging Face Hub layout (GSM8K, MATH, HumanEval,
  MBPP, APPS, CodeContests): a file (split ``test``), a directory whose data files are named by their
  split (``train-00000-of-00001.parquet``, ``data/test-00000-of-00001-<hash>.parquet``, ``test.jsonl``:
  the name up to its first ``-`` or ``.``, one of :data:`HUB_SPLITS`; several shards of a split are read
  in name order), or a ``datasets`` name (``openai/gsm8k:main``: :func:`datasets.load_dataset` with the
  configuration after the colon, from the local ``datasets`` cache when offline). Rows are read by
  :func:`iter_rows` (parquet through ``pyarrow``, with its nested types as lists and objects); a bad
  row is a :class:`~searchrl.data.RecordError` naming the file, the 1-based row (a parquet file's row,
  a JSON Lines file's line) and the field.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..data import InputError, iter_json_list, iter_jsonl, read_json, write_json, write_jsonl

#: the file of a prepared data directory that says which user's file (and line) each split's records came from
SOURCES_FILE = "sources.json"
#: the splits a synthetic task with held-out compositions writes, and whether each holds them
COMPOSITION_SPLITS = (("train", False), ("selftrain", False), ("valid", False), ("valid_unseen", True),
                      ("test_seen", False), ("test_unseen", True))
#: how reports title those splits (the default titles are Countdown's "Seen target" / "Unseen target")
COMPOSITION_TITLES = {"test_seen": "Seen compositions", "test_unseen": "Held-out compositions",
                      "valid": "Seen compositions (valid)", "valid_unseen": "Held-out compositions (valid)"}


@dataclass(frozen=True)
class Split:
    name: str
    size: int
    unseen: bool


def draw_splits(splits: list[Split], stream: Callable[[Split], str],
                draw: Callable[[random.Random, Split, set[str]], tuple[str, dict[str, Any]] | None]
                ) -> dict[str, list[dict[str, Any]]]:
    """Problems of every split: ``draw(rng, split, used)`` returns ``(key, problem)`` or ``None`` (rejected:
    wrong composition for the split, a key already ``used``, ...); ``rng`` is ``random.Random(stream(split))``.
    Held-out splits are drawn first, then the others in the order given; the result is in the order given."""
    used: set[str] = set()
    out: dict[str, list[dict[str, Any]]] = {}
    for split in sorted(splits, key=lambda s: not s.unseen):
        rng = random.Random(stream(split))
        problems: list[dict[str, Any]] = []
        for _ in range(200 * split.size + 1000):
            if len(problems) == split.size:
                break
            got = draw(rng, split, used)
            if got is None:
                continue
            used.add(got[0])
            problems.append(got[1])
        if len(problems) < split.size:
            raise ValueError(f"split {split.name!r}: only {len(problems)} distinct problems of the {split.size} asked "
                             f"for could be drawn; ask for fewer")
        out[split.name] = problems
    return {s.name: out[s.name] for s in splits}


def composition_splits(cfg) -> list[Split]:
    """The :data:`COMPOSITION_SPLITS` at the sizes a synthetic task's settings give (``n_train``,
    ``n_selftrain``, ``n_valid``, ``n_valid_unseen``, ``n_test`` for each test split); empty ones left out."""
    sizes = {"train": cfg.n_train, "selftrain": cfg.n_selftrain, "valid": cfg.n_valid,
             "valid_unseen": cfg.n_valid_unseen, "test_seen": cfg.n_test, "test_unseen": cfg.n_test}
    return [Split(name, sizes[name], unseen) for name, unseen in COMPOSITION_SPLITS if sizes[name]]


@dataclass(frozen=True)
class Source:
    """Where the records of a split were read from: a user's file and the 1-based line of each record;
    a split read from several files (a Hub dataset's shards) also has ``parts``, each file with its
    number of records, in order (``path`` is then the first)."""

    path: str
    lines: list[int]
    parts: tuple[tuple[str, int], ...] = ()


#: the file-name prefixes of a Hub dataset's splits (the name up to its first "-" or ".") and our split names
HUB_SPLITS = {"train": "train", "valid": "valid", "validation": "valid", "test": "test", "selftrain": "selftrain"}
#: the data files :func:`iter_rows` reads
DATA_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".json")
#: a ``datasets`` name with an optional configuration (``openai/gsm8k:main``)
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(?:/[\w.-]+)?(?::[\w.-]+)?")


def iter_rows(path: str | os.PathLike, columns: Sequence[str] | None = None,
              what: str = "records") -> Iterator[tuple[int, Any]]:
    """``(row, record)`` of a data file, rows 1-based: a parquet file's rows (read with ``pyarrow``, only
    ``columns`` of them when given; struct columns become dicts, list columns lists), a ``.json`` list's
    items (the line each starts on), or a JSON Lines file's lines (``.gz`` ok). A file that is not what
    its name says is an :class:`~searchrl.data.InputError` naming it."""
    path = Path(path)
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:  # a declared dependency; say so rather than fail obscurely
            raise ImportError("reading parquet needs pyarrow: pip install pyarrow") from e
        import pyarrow as pa

        try:
            pf = pq.ParquetFile(path)
            names = set(pf.schema_arrow.names)
            cols = None if columns is None else [c for c in columns if c in names]
            row = 0
            for batch in pf.iter_batches(batch_size=256, columns=cols):
                for rec in batch.to_pylist():
                    row += 1
                    yield row, rec
        except (pa.ArrowException, OSError) as e:
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise InputError(f"{path}: not a readable parquet file ({why})") from None
        return
    yield from iter_json_list(path, what) if path.suffix == ".json" else iter_jsonl(path)


def _hub_prefix(name: str) -> str | None:
    """Our split for a Hub data file's name (``None``: not a data file of a split)."""
    if not name.endswith(DATA_SUFFIXES):
        return None
    return HUB_SPLITS.get(re.split(r"[-.]", name, maxsplit=1)[0])


def hub_files(path: str | os.PathLike) -> dict[str, list[Path]]:
    """Each split's data files in a Hub dataset's directory (see the module doc; searched below it too,
    hidden directories left out). A split's files must lie in one directory: the Hub keeps each
    configuration in its own (GSM8K's ``main/`` and ``socratic/``), so files in two are an error that
    asks for the one meant; so are two prefixes of one split (``valid`` and ``validation``)."""
    root = Path(path)
    found: dict[str, list[Path]] = {}
    for f in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in f.relative_to(root).parts) or not f.is_file():
            continue
        split = _hub_prefix(f.name)
        if split is not None:
            found.setdefault(split, []).append(f)
    if not found:
        raise InputError(f"task.path={path}: no data files of a split in it (names starting with "
                         f"{'/'.join(HUB_SPLITS)}, ending {' / '.join(DATA_SUFFIXES)})")
    for split, files in found.items():
        dirs = sorted({str(f.parent) for f in files})
        if len(dirs) > 1:
            raise InputError(f"task.path={path}: split {split!r} has files in {dirs[0]} and {dirs[1]} (two "
                             f"configurations of the dataset?); point task.path at the directory meant")
        prefixes = sorted({re.split(r"[-.]", f.name, maxsplit=1)[0] for f in files})
        kinds = sorted({f.name[len(f.name.split(".")[0]):] for f in files})
        if len(prefixes) > 1 or len(kinds) > 1:
            raise InputError(f"task.path={path}: split {split!r} has files {files[0].name} and {files[-1].name} "
                             f"in {dirs[0]}; keep one kind")
    return {split: found[split] for split in sorted(found)}


def is_hub_name(path: str) -> bool:
    """Whether ``task.path`` names a ``datasets`` dataset rather than a local file: no such file or directory
    exists, and it reads as ``[owner/]name[:configuration]``, not as a file name."""
    return (not os.path.exists(path) and HUB_NAME.fullmatch(path) is not None
            and not path.endswith(DATA_SUFFIXES) and not path.startswith("."))


def dataset_rows(spec: str) -> dict[str, tuple[str, Any]]:
    """The splits of a ``datasets`` name (``name[:configuration]``): our split name -> (the label errors
    name it by, ``name:configuration[split]``, and its rows). Offline this works only from the local
    ``datasets`` cache; any failure is one :class:`~searchrl.data.InputError` line."""
    name, _, config = spec.partition(":")
    call = f"datasets.load_dataset({name!r}{', ' + repr(config) if config else ''})"
    try:
        import datasets
    except ImportError:
        raise InputError(f"task.path={spec}: no such file or directory, and reading it as a datasets name needs "
                         f"the datasets package (pip install 'searchrl[data]')") from None
    try:
        got = datasets.load_dataset(name, config or None)
    except Exception as e:  # noqa: BLE001 - offline, unknown name, no such configuration: one line for the user
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"task.path={spec}: no such file or directory, and {call} failed ({type(e).__name__}: "
                         f"{why[:300]}); give a local file or directory in the dataset's layout, or download it "
                         f"into the datasets cache first") from None
    out: dict[str, tuple[str, Any]] = {}
    for split in got:
        ours = HUB_SPLITS.get(split, split)
        if ours in out:
            raise InputError(f"task.path={spec}: two splits for {ours!r}; keep one")
        out[ours] = (f"{spec}[{split}]", got[split])
    return out


def hub_splits(path: str, record: Callable[[dict, str | Path, int], dict], what: str,
               columns: Sequence[str] | None = None, sources: dict[str, Source] | None = None
               ) -> dict[str, list[dict]]:
    """Splits of a published dataset in its own layout (see the module doc): every row of ``path``'s files
    becomes ``record(row, file, row_number)``, which raises a :class:`~searchrl.data.RecordError` naming
    both for a bad one. ``columns``: the only columns a parquet file need give (the rest are not read).
    ``sources``, when given, receives where each split's records came from."""
    src = Path(path)
    if src.is_file():
        files: dict[str, list[Path]] = {"test": [src]}
    elif src.is_dir():
        files = hub_files(src)
    elif is_hub_name(path):
        out = {}
        for split, (label, rows) in dataset_rows(path).items():
            out[split] = [record(dict(rec), label, i) for i, rec in enumerate(rows, 1)]
            if sources is not None:
                sources[split] = Source(label, list(range(1, len(out[split]) + 1)))
        return out
    else:
        raise FileNotFoundError(f"task.path={path}: no such {what} file or directory")
    out = {}
    for split, fs in files.items():
        recs: list[dict] = []
        lines: list[int] = []
        parts = []
        for f in fs:
            before = len(recs)
            for row, rec in iter_rows(f, columns):
                recs.append(record(rec, f, row))
                lines.append(row)
            parts.append((str(f), len(recs) - before))
        out[split] = recs
        if sources is not None:
            sources[split] = Source(str(fs[0]), lines, tuple(parts) if len(parts) > 1 else ())
    return out


def files_as_splits(path: str, patterns: tuple[str, ...], load: Callable[[Path, list[int]], list[dict]],
                    what: str, sources: dict[str, Source] | None = None) -> dict[str, list[dict]]:
    """Splits from files: ``path`` a file (split ``test``) or a directory of them (one split per file
    matching ``patterns``, named by its stem), each read by ``load(file, lines)``, which returns the
    file's records and appends each one's 1-based line to ``lines``. ``sources``, when given, receives
    the :class:`Source` of every split (the file as ``path`` names it)."""
    src = Path(path)
    files = sorted({f for pattern in patterns for f in src.glob(pattern)}) if src.is_dir() else [src]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"task.path={path}: no such {what} file (or a directory without any)")
    seen: dict[str, Path] = {}
    for f in files:
        split = "test" if f == src else f.stem
        if split in seen:
            raise InputError(f"task.path={path}: two files for split {split!r} ({seen[split]} and {f}); keep one")
        seen[split] = f
    out: dict[str, list[dict]] = {}
    for split, f in seen.items():
        lines: list[int] = []
        out[split] = load(f, lines)
        if len(lines) != len(out[split]):
            raise RuntimeError(f"{f}: the reader gave {len(out[split])} records but {len(lines)} lines")
        if sources is not None:
            sources[split] = Source(str(f), lines)
    return out


class SplitFiles:
    """The data directory of a task (see the module doc): subclasses set ``config`` (a dataclass with
    ``NOT_DATA``) and ``data_dir``, call ``_init_splits()`` and define ``_make_splits()`` (the splits
    ``prepare`` writes; splits read from the user's files come from :meth:`_splits_from_files`) and
    ``_validate(rec, path, line)``.

    Records read from a user's file are checked twice over before anything is written: by the
    task's reader (the file's own layout) and by ``_validate`` (what the task needs), each error
    naming the user's file, line and field. ``prepare`` then writes the splits and
    ``sources.json`` (each split's file and the line of every record, so that a later error about
    a problem, such as SFT finding no reference solution, names the user's file and line, see
    :meth:`where`), then ``config.json`` and ``stats.json`` last: a bad record leaves the data
    directory as it was, not prepared.
    """

    config: Any
    data_dir: Path

    def _init_splits(self) -> None:
        self._cache: dict[str, list[dict]] = {}
        self._lines: dict[str, list[int]] = {}
        self._made_sources: dict[str, Source] = {}
        self._read_sources: dict[str, dict] | None = None

    def is_prepared(self) -> bool:
        return (self.data_dir / "stats.json").exists()

    def _make_splits(self) -> dict[str, list[dict]]:
        raise NotImplementedError

    def _splits_from_files(self, path: str, patterns: tuple[str, ...], load: Callable[[Path, list[int]], list[dict]],
                           what: str) -> dict[str, list[dict]]:
        """:func:`files_as_splits`, remembering where each record came from (for ``prepare``)."""
        return files_as_splits(path, patterns, load, what, sources=self._made_sources)

    def _splits_from_hub(self, path: str, record: Callable[[dict, str | Path, int], dict], what: str,
                         columns: Sequence[str] | None = None) -> dict[str, list[dict]]:
        """:func:`hub_splits`, remembering where each record came from (for ``prepare``)."""
        return hub_splits(path, record, what, columns, sources=self._made_sources)

    def prepare(self, data_dir=None, progress: bool = True) -> dict | None:
        """Write the task's splits into ``data_dir`` (default: its own) unless they are there; the stats.

        Every record read from a user's file is validated first; a bad one raises a
        :class:`~searchrl.data.RecordError` naming that file and line, and nothing is written."""
        out = Path(data_dir) if data_dir is not None else self.data_dir
        if (out / "stats.json").exists():
            return None
        self._made_sources = {}
        splits = self._make_splits()
        for split, src in self._made_sources.items():
            for rec, (path, line) in zip(splits[split], _record_places(src)):
                self._validate(rec, Path(path), line)
        out.mkdir(parents=True, exist_ok=True)
        stats = self.write_splits(out, splits)
        self._read_sources = None  # read sources.json afresh
        return stats

    def write_splits(self, out: Path, splits: dict[str, list[dict]]) -> dict:
        """Write ``splits``, where their records came from, the data settings and (last) the stats;
        returns the stats."""
        for split, recs in splits.items():
            write_jsonl(out / f"{split}.jsonl", recs)
        made = {split: src for split, src in self._made_sources.items() if split in splits}
        if made:
            write_json(out / SOURCES_FILE, {split: _source_json(src) for split, src in made.items()}, indent=None)
        elif (out / SOURCES_FILE).exists():
            (out / SOURCES_FILE).unlink()
        stats = {"source": self.config.source, **{split: len(recs) for split, recs in splits.items()}}
        skip = type(self.config).NOT_DATA
        write_json(out / "config.json", {k: v for k, v in asdict(self.config).items() if k not in skip})
        write_json(out / "stats.json", stats)  # last: a directory without it is not trusted
        return stats

    def prepared_settings(self) -> dict | None:
        path = self.data_dir / "config.json"
        return read_json(path) if path.exists() else None

    def _path(self, split: str) -> Path:
        path = self.data_dir / f"{split}.jsonl"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such split (prepare the task's data first)")
        return path

    def _validate(self, rec: dict, path: Path, line: int) -> dict:
        raise NotImplementedError

    def problems(self, split: str) -> list[dict[str, Any]]:
        if split not in self._cache:
            path = self._path(split)
            recs, lines = [], []
            for line, rec in iter_jsonl(path):
                recs.append(self._validate(rec, path, line))
                lines.append(line)
            self._cache[split], self._lines[split] = recs, lines
        return self._cache[split]

    def source(self, split: str) -> dict | None:
        """``{"path", "lines"}``: the user's file ``split`` was prepared from (``sources.json``), if any."""
        if self._read_sources is None:
            path = self.data_dir / SOURCES_FILE
            got = read_json(path) if path.exists() else {}
            self._read_sources = got if isinstance(got, dict) else {}
        src = self._read_sources.get(split)
        return src if isinstance(src, dict) and isinstance(src.get("lines"), list) else None

    def where(self, split: str, index: int) -> tuple[str, int]:
        """The file and 1-based line of problem ``index`` of ``split``: the user's file it was prepared
        from when the data directory records one, else the data directory's split file."""
        problems = self.problems(split)
        src = self.source(split)
        if src is not None and len(src["lines"]) == len(problems):
            path = src["path"]
            at = 0
            for part, count in src.get("parts") or ():  # a split read from several files: the one holding it
                if index < at + count:
                    path = part
                    break
                at += count
            return str(path), src["lines"][index]
        return str(self._path(split)), self._lines[split][index]


def _local(path: str) -> str:
    """A user's file as an absolute path (a ``datasets`` name, which is no file here, as it is)."""
    return os.path.abspath(path) if os.path.exists(path) else path


def _source_json(src: Source) -> dict:
    out: dict[str, Any] = {"path": _local(src.path), "lines": src.lines}
    if src.parts:
        out["parts"] = [[_local(p), n] for p, n in src.parts]
    return out


def _record_places(src: Source) -> Iterator[tuple[str, int]]:
    """``(file, line)`` of every record of a :class:`Source`, in order."""
    files = [p for p, n in src.parts for _ in range(n)] if src.parts else [src.path] * len(src.lines)
    return zip(files, src.lines)


__all__ = ["SplitFiles", "Source", "Split", "draw_splits", "composition_splits", "files_as_splits",
           "COMPOSITION_SPLITS", "COMPOSITION_TITLES", "SOURCES_FILE", "HUB_SPLITS", "DATA_SUFFIXES", "iter_rows",
           "hub_files", "hub_splits", "is_hub_name", "dataset_rows"]
