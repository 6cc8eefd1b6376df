"""Records on disk: JSONL reading with file:line errors, field checks, and atomic writes.

A bad record is a :class:`RecordError` (an :class:`InputError`: the CLI prints it as one line
and exits with status 2) naming the file, the 1-based line and the field, and saying what was
expected: ``data/train.jsonl:2: field 'solution': expected a string, got int`` (:func:`field_value`).

Every file searchrl writes goes through :func:`atomic_write` (or its JSON/JSONL
helpers): the bytes go to a temporary file in the same directory, are flushed and
fsynced, and only then renamed over the destination. A crash or Ctrl-C therefore
leaves either the old file or the new one, never a half-written file that a later
step would trust.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


class InputError(ValueError):
    """Bad input from the user (a setting, a file, a model directory): the CLI prints the message
    alone, no traceback, and exits with status 2."""


class RecordError(InputError):
    """Bad input record; the message names the file, the line and the field."""

    def __init__(self, path: str | os.PathLike, line: int, field: str | None, message: str):
        self.path, self.line, self.field = str(path), line, field
        where = f"{path}:{line}"
        if field is not None:
            where += f": field '{field}'"
        super().__init__(f"{where}: {message}")


#: what a record error says a field should be, by the Python type a JSON value reads as
EXPECTED = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
            dict: "an object"}


def type_name(value: Any) -> str:
    """How a record error names the type of a JSON value: ``str``, ``int``, ``float``, ``bool``, ``list``,
    ``dict``, or ``null``."""
    return "null" if value is None else type(value).__name__


def is_kind(value: Any, kind: type | tuple[type, ...]) -> bool:
    """``isinstance(value, kind)``, except that JSON's ``true``/``false`` is no integer or number
    unless ``bool`` is among the kinds."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        return False
    return isinstance(value, kinds)


def expected(kind: type | tuple[type, ...]) -> str:
    """``"a string"``, ``"a string or a number"``, ...: what a field of ``kind`` should be."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(EXPECTED.get(k, k.__name__) for k in kinds)


def field_value(rec: dict, name: str, kind: type | tuple[type, ...], path: str | os.PathLike, line: int,
                required: bool = True, field: str | None = None, what: str | None = None) -> Any:
    """``rec[name]`` checked to be of ``kind`` (see :func:`is_kind`), else a :class:`RecordError` naming
    ``path``, ``line`` and the field (``field``, default ``name``): ``missing (expected a string)`` when it
    is absent and ``required``, ``expected a string, got int`` when it has another type. An optional field
    that is absent or ``null`` (JSON's "no value") is ``None``. ``what`` replaces the ``a string`` of the
    messages."""
    field = field or name
    what = what or expected(kind)
    if name not in rec or (rec[name] is None and not required):
        if required:
            raise RecordError(path, line, field, f"missing (expected {what})")
        return None
    value = rec[name]
    if not is_kind(value, kind):
        raise RecordError(path, line, field, f"expected {what}, got {type_name(value)}")
    return value


def _open_text(path: str | os.PathLike, mode: str = "rt"):
    if str(path).endswith(".gz"):
        return gzip.open(path, mode, encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` for every non-blank line of a JSONL file (``.gz`` ok).

    Raises :class:`RecordError` naming the file and line for invalid JSON or a non-object.
    """
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield lineno, _parse_record(path, lineno, line)


def _parse_record(path: str | os.PathLike, lineno: int, line: str) -> dict[str, Any]:
    """One JSONL line as a dict, or a :class:`RecordError` naming the file and line."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise RecordError(path, lineno, None, f"invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(rec, dict):
        raise RecordError(path, lineno, None, f"expected a JSON object, got {type(rec).__name__}")
    return rec


def iter_json_list(path: str | os.PathLike, what: str = "records") -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, item)`` for every item of a JSON file holding one list: the 1-based line
    the item starts on, so errors about it can name where it is. A file that is not JSON is a
    :class:`RecordError` naming the line; one that is not a list is an :class:`InputError`."""
    with _open_text(path) as f:
        text = f.read()
    decoder = json.JSONDecoder()
    pos, line = 0, 1

    def skip(to: int) -> int:  # to the next non-space character, counting lines
        nonlocal line
        end = to
        while end < len(text) and text[end] in " \t\r\n":
            end += 1
        line += text.count("\n", to, end)
        return end

    def fail(at: int, msg: str):
        raise RecordError(path, line + text.count("\n", pos, at), None, msg)

    pos = skip(0)
    if pos == len(text) or text[pos] != "[":
        try:
            got = type_name(json.loads(text))
        except json.JSONDecodeError as e:
            raise RecordError(path, e.lineno, None, f"invalid JSON ({e.msg} at column {e.colno})") from None
        raise InputError(f"{path}: expected a JSON list of {what}, got {got}")
    pos = skip(pos + 1)
    if pos < len(text) and text[pos] == "]":
        pos = skip(pos + 1)
    else:
        while True:
            try:
                item, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as e:
                fail(e.pos, f"invalid JSON ({e.msg})")
            yield line, item
            line += text.count("\n", pos, end)
            pos = skip(end)
            if pos < len(text) and text[pos] == ",":
                pos = skip(pos + 1)
                continue
            if pos < len(text) and text[pos] == "]":
                pos = skip(pos + 1)
                break
            fail(pos, "invalid JSON (expected ',' or ']' after an item)")
    if pos != len(text):
        fail(pos, "invalid JSON (text after the list)")


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    return [rec for _, rec in iter_jsonl(path)]


def read_jsonl_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of an append-only JSONL log (see :func:`append_jsonl`).

    A last line cut short by a crash (no newline at its end, not valid JSON) is
    dropped; an invalid line anywhere else is a :class:`RecordError`.
    """
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    out = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(_parse_record(path, lineno, line))
        except RecordError:
            if lineno == len(lines) and not _is_json(line):  # no newline after it: a write cut short
                break
            raise
    return out


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one record as one line of an append-only log, flushed to disk.

    Cost is one line, not the whole file. A crash can leave at most a partial
    last line, which :func:`read_jsonl_log` drops.
    """
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w"):
    """Open a temporary file next to ``path``; rename it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        kwargs = {} if "b" in mode else {"encoding": "utf-8"}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> int:
    """Atomically write records as JSON Lines; returns the number written."""
    n = 0
    with atomic_write(path) as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)


def resumable_shards(n: int, shard_size: int, path_of: Callable[[int, int], Path],
                     produce: Callable[..., list[dict]], desc: str = "", progress: bool = True,
                     per_item: int = 1, unit: str | None = None, workers: Any = None) -> list[dict]:
    """Records for items ``0..n-1``, made ``shard_size`` at a time and kept on disk.

    Shard ``[start, end)`` lives at ``path_of(start, end)``: a finished shard is read back,
    a missing one is made by the job ``produce(resources, start, end, advance)`` on
    ``workers`` (:mod:`searchrl.fanout`: in this process by default, or on Ray actors) and
    written atomically as soon as it arrives, so a crash loses at most the shards in flight
    and a rerun recomputes nothing finished.

    The progress bar counts ``per_item`` units per item (e.g. samples per problem), named
    ``unit`` (default: "problem", or "sample" when ``per_item > 1``); ``produce`` may call
    ``advance(k)`` as units finish, so the bar moves within a shard. A rerun that finds
    finished shards says so ("resuming: k of n problems done").
    """
    from tqdm.auto import tqdm

    from .fanout import LocalWorkers

    workers = workers if workers is not None else LocalWorkers()
    spans = [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]
    todo = [sp for sp in spans if not path_of(*sp).exists()]
    done = n - sum(e - s for s, e in todo)
    if done and done < n:
        desc = f"{desc} (resuming: {done} of {n} problems done)"
    unit = unit or ("problem" if per_item == 1 else "sample")
    made: dict[tuple[int, int], list[dict]] = {}
    moved: dict[tuple[int, int], int] = {}
    with tqdm(total=n * per_item, desc=desc, unit=unit, disable=not progress) as bar:
        bar.update(done * per_item)

        def advance(span, k):
            moved[span] = moved.get(span, 0) + k
            bar.update(k)

        for (start, end), part in workers.map(produce, todo, advance):
            write_jsonl(path_of(start, end), part)
            made[(start, end)] = part
            bar.update(max(0, (end - start) * per_item - moved.get((start, end), 0)))
    records: list[dict] = []
    for span in spans:
        records.extend(made[span] if span in made else read_jsonl(path_of(*span)))
    return records


def embed_json(obj: Any, *, allow_nan: bool = False) -> str:
    """``obj`` as one line of JSON that is safe inside an HTML ``<script>`` element: ``<``, ``>`` and ``&``
    (and the line separators U+2028/U+2029, which some readers split lines at) written as ``\\u``
    escapes, which JSON reads back unchanged. The run viewer embeds its data this way, and the search
    trees are written this way so a page can embed a line as it is."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=allow_nan, separators=(",", ":"))
    for ch, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text
