"""Batch rendering: many scripts to talking-avatar clips, resumable, on a process pool or Ray.

Input is CSV or JSONL with a ``text`` column and optional ``id``, ``avatar`` (a portrait path),
``voice`` (a spec, e.g. ``recorded:<path>``) and ``seed``; a relative path in a file is read
from the file's folder. Every row is checked before any work. Each item lands in
``<out>/<id>/``; ``response.json`` is written last and atomically, so a rerun skips items that
finished and redoes the rest. Failures are collected per item in ``<out>/batch-report.json``.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import signal
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from avatarkit._files import discard_temporary_video, write_json_atomic
from avatarkit.errors import (
    AvatarKitError,
    ConfigurationError,
    InputValidationError,
    MissingExtraError,
)

if TYPE_CHECKING:
    from avatarkit.bot import AvatarBot

__all__ = ["BatchItem", "BatchReport", "read_items", "run_batch"]

Executor = Literal["process", "serial", "ray"]


class BatchItem(BaseModel):
    """One script to render."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$", max_length=120)
    """Folder name of the result (derived from the text when empty); not only dots."""
    text: str = Field(min_length=1)
    avatar: str | None = None
    """Path of a portrait to animate (default: the procedural face for ``seed``).

    :func:`read_items` makes a relative path absolute from the batch file's folder; given
    directly to :func:`run_batch`, it is relative to the current folder."""
    voice: str | None = None
    """Voice spec for this item (default: the batch's voice).

    A ``recorded:<path>`` voice's path is read like ``avatar``'s."""
    seed: int = Field(default=0, ge=0)
    """Seed of the generated face and its idle motion."""

    @field_validator("id")
    @classmethod
    def _not_only_dots(cls, value: str) -> str:
        if value and not value.strip("."):
            # "." is the output folder itself and ".." its parent: results would land there
            raise ValueError(f"{value!r} is made only of dots, which names no folder of its own")
        return value


class BatchReport(BaseModel):
    """What a batch run did."""

    done: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)
    """Items already finished by an earlier run."""
    failed: dict[str, str] = Field(default_factory=dict)
    """Item id → error message."""
    seconds: float = 0.0


def read_items(path: str | Path) -> list[BatchItem]:
    """Read a CSV (header row) or JSONL file of items; ids are made unique and filled in.

    The file is UTF-8, with or without a byte-order mark (Excel's "CSV UTF-8"). Every row is
    checked, and one error lists each bad row with the file's line number and the reason. A
    relative path in a row (``avatar``, a ``recorded:<path>`` voice) is read from the batch
    file's folder (not the current one), and made absolute.

    Raises:
        InputValidationError: unreadable file, rows without text or with a bad field, a
            missing portrait or recording file, or duplicate ids.
    """
    p, rows = _read(path)
    items, problems = _check_fields(rows, p)
    _refuse(problems, p)
    _refuse_duplicates(items, p)
    return [it for _, it in items]


_FIELDS = tuple(BatchItem.model_fields)


class _Problem(NamedTuple):
    """Why one row cannot be rendered."""

    where: str
    """``line 3 (item 2)`` in a file, ``item 'a'`` for items given in Python."""
    reason: str
    field: str | None
    cause: BaseException | None


def _read(path: str | Path) -> tuple[Path, list[tuple[str, Any]]]:
    """The file and its rows, each with where it is (``line 3 (item 2)``)."""
    p = Path(path)
    if not p.is_file():
        raise InputValidationError(f"batch file {p} does not exist", field="path")
    suffix = p.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv"):
        raise InputValidationError(f"{p}: use a .csv or .jsonl file", field="path")
    try:
        rows = _csv_rows(p) if suffix == ".csv" else _jsonl_rows(p)
    except UnicodeDecodeError as exc:
        raise InputValidationError(
            f"{p} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8",
            field="path",
        ) from exc
    except csv.Error as exc:
        raise InputValidationError(f"cannot read {p}: {exc}", field="path") from exc
    except OSError as exc:
        raise InputValidationError(f"cannot read {p}: {exc.strerror or exc}", field="path") from exc
    return p, [(f"line {line} (item {n})", row) for n, (line, row) in enumerate(rows, 1)]


def _check_fields(
    rows: Sequence[tuple[str, Any]], batch_file: Path | None
) -> tuple[list[tuple[str, BatchItem]], list[_Problem]]:
    """Validate every row and make its paths absolute; no backend is built.

    Rows of a file (``batch_file``) are told apart by their line, get an id when they have
    none, and their relative paths are read from the file's folder; items given in Python
    (``batch_file`` None) keep their ids, and their paths are read from the current folder.
    """
    kind, base, hint = "field", Path.cwd(), "the current folder"
    if batch_file is not None:
        kind = "column" if batch_file.suffix.lower() == ".csv" else "key"
        base, hint = batch_file.parent.resolve(), "the batch file's folder"
    items: list[tuple[str, BatchItem]] = []
    problems: list[_Problem] = []
    for n, (where, row) in enumerate(rows, 1):
        try:
            item = _validated(row, kind)
        except InputValidationError as exc:
            problems.append(_Problem(where, str(exc), exc.field, exc.__cause__))
            continue
        if batch_file is not None and not item.id:
            item.id = f"{n:05d}-" + hashlib.sha1(item.text.encode()).hexdigest()[:8]
        if item.avatar is not None:
            path = _absolute(item.avatar, base)
            item.avatar = str(path)
            if not path.is_file():
                reason = f"avatar: {_missing(path, hint)}"
                problems.append(_Problem(where, reason, "avatar", None))
        recording = _recording(item.voice)
        if recording is not None:
            path = _absolute(recording, base)
            item.voice = f"recorded:{path}"
            if not path.is_file():
                reason = f"voice: recording {_missing(path, hint)}"
                problems.append(_Problem(where, reason, "voice", None))
        items.append((where, item))
    return items, problems


def _missing(path: Path, hint: str) -> str:
    """Why ``path`` (not a file) cannot be read: a folder, or nothing there."""
    if path.is_dir():
        return f"{path} is a folder, not a file"
    return f"{path} does not exist (a relative path is read from {hint})"


def _absolute(value: str, base: Path) -> Path:
    """``value`` as a path, ``~`` expanded; a relative one is read from ``base``."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _recording(voice: str | None) -> str | None:
    """The path of a ``recorded:<path>`` voice spec, else None."""
    from avatarkit.registry import parse_spec

    if not voice or not voice.strip():
        return None
    try:
        provider, name = parse_spec(voice)
    except ConfigurationError:  # reported when the voice is built
        return None
    return name if provider == "recorded" and name else None


def _check_texts(items: Sequence[tuple[str, BatchItem]], bot: AvatarBot) -> list[_Problem]:
    """Each row's text as the bot would speak it: not too long, with something to speak."""
    problems: list[_Problem] = []
    for where, it in items:
        try:
            bot.spoken_text(it.text)
        except InputValidationError as exc:
            problems.append(_Problem(where, f"text: {exc}", "text", exc))
    return problems


def _check_backends(
    items: Sequence[tuple[str, BatchItem]], options: dict[str, Any], known: Sequence[_Problem]
) -> list[_Problem]:
    """Build each distinct row voice and portrait as the workers will; no backend is called.

    A voice is built alone (an unknown provider, a missing key or extra, a recording that does
    not decode); a portrait with the batch's renderer, which must be able to animate it. A
    field with a ``known`` problem (a missing file) is left out.
    """
    from avatarkit.bot import AvatarBot

    def build(field: str, value: str) -> AvatarKitError | None:
        try:
            if field == "voice":
                AvatarBot(
                    chat=None, preprocessor=None, intent=None, sentiment=None, expression=None,
                    renderer=None, image=None, voice=value,
                )  # fmt: skip
            else:
                check = _make_bot(None, value, 0, options, image=False)._avatar_checks(True)
                if check is not None:
                    check()
        except AvatarKitError as exc:
            return exc
        return None

    skip = {(problem.where, problem.field) for problem in known}
    built: dict[tuple[str, str], AvatarKitError | None] = {}
    problems: list[_Problem] = []
    for where, it in items:
        for field, value in (("voice", it.voice), ("avatar", it.avatar)):
            if not value or (where, field) in skip:
                continue
            if (field, value) not in built:
                built[field, value] = build(field, value)
            error = built[field, value]
            if error is not None:
                problems.append(_Problem(where, f"{field}: {error}", field, error))
    return problems


_LISTED = 10
"""Most distinct problems one error lists."""


def _refuse(problems: Sequence[_Problem], batch_file: Path | None) -> None:
    """Raise one InputValidationError listing every bad row (rows with one reason together)."""
    if not problems:
        return
    first = problems[0]
    if len(problems) == 1:
        message = f"{batch_file} {first.where}" if batch_file else first.where
        message += f": {first.reason}"
    else:
        by_reason: dict[str, list[str]] = {}
        for problem in problems:
            by_reason.setdefault(problem.reason, []).append(problem.where)
        count = len({problem.where for problem in problems})
        noun = ("row" if batch_file else "item") + ("s" if count > 1 else "")
        lines = [f"{f'{batch_file}: ' if batch_file else ''}{count} {noun} cannot be rendered:"]
        for reason, wheres in list(by_reason.items())[:_LISTED]:
            more = f" and {len(wheres) - 3} more" if len(wheres) > 3 else ""
            lines.append(f"  {', '.join(wheres[:3])}{more}: {reason}")
        if len(by_reason) > _LISTED:
            lines.append(f"  and {len(by_reason) - _LISTED} more problems")
        message = "\n".join(lines)
    raise InputValidationError(message, field=first.field) from first.cause


def _refuse_duplicates(items: Sequence[tuple[str, BatchItem]], batch_file: Path) -> None:
    counts = Counter(it.id for _, it in items)
    dupes = sorted(i for i, k in counts.items() if k > 1)
    if dupes:
        raise InputValidationError(
            f"{batch_file}: duplicate ids {', '.join(dupes[:5])}", field="id"
        )


def _jsonl_rows(p: Path) -> list[tuple[int, Any]]:
    """(line number, parsed line) for every line that is not blank."""
    rows: list[tuple[int, Any]] = []
    with p.open(encoding="utf-8-sig") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputValidationError(
                    f"cannot read {p} line {line_no}: {exc.msg} (column {exc.colno})",
                    field="path",
                ) from exc
            if not isinstance(row, dict):
                raise InputValidationError(
                    f'{p} line {line_no}: expected a JSON object such as {{"text": "Hello"}}, '
                    f"got {type(row).__name__}",
                    field="path",
                )
            rows.append((line_no, row))
    return rows


def _csv_rows(p: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, {column: value}) for every row with a value; empty cells are left out."""
    rows: list[tuple[int, dict[str, str]]] = []
    with p.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header: list[str] | None = None
        start = 1
        for record in reader:
            line_no, start = start, reader.line_num + 1  # a quoted value may span lines
            if not any(cell.strip() for cell in record):
                continue  # blank lines, and Excel's rows of empty cells
            if header is None:
                header = [name.strip() for name in record]
                _check_header(p, header)
                continue
            if len(record) > len(header):
                raise InputValidationError(
                    f"{p} line {line_no} (item {len(rows) + 1}): the row has more values than "
                    f"the header has columns ({len(header)}); quote a text with commas in it",
                    field="path",
                )
            rows.append((line_no, {k: v for k, v in zip(header, record, strict=False) if v}))
    if header is None:
        raise InputValidationError(
            f"{p} has no header row: start it with one such as id,text", field="path"
        )
    return rows


def _check_header(p: Path, header: list[str]) -> None:
    known = ", ".join(_FIELDS)
    if "text" not in header:
        found = ", ".join(repr(name) for name in header)
        if any(";" in name or "\t" in name for name in header):
            hint = "separate columns with commas"
        elif any(name.lower() in _FIELDS for name in header):
            hint = f"column names are lower-case: {known}"
        else:
            hint = f"columns: {known}"
        raise InputValidationError(
            f"{p}: no 'text' column; the header has {found} ({hint})", field="text"
        )
    unknown = [name for name in header if name and name not in _FIELDS]
    if unknown:
        raise InputValidationError(
            f"{p}: unknown column {unknown[0]!r} (columns: {known})", field=unknown[0]
        )


def _describe(exc: ValidationError, kind: str = "field") -> str:
    """The first problem pydantic found, with the field (CSV column, JSON key) it is about."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown {kind} {where!r} ({kind}s: {', '.join(_FIELDS)})"
    message = str(error["msg"])
    if error["type"] == "value_error":  # our own validators: no "Value error, " prefix
        message = str(error.get("ctx", {}).get("error", message))
    return f"{where}: {message}" if where else message


def _is_done(folder: Path) -> bool:
    return (folder / "response.json").is_file()


_bots: dict[tuple[Any, ...], Any] = {}


def _make_bot(
    voice: str | None, avatar: str | None, seed: int, options: dict[str, Any], *, image: bool = True
) -> Any:
    """The bot that renders items with this voice, portrait and seed (specs resolved here)."""
    from avatarkit.bot import AvatarBot
    from avatarkit.registry import default_registry, parse_spec
    from avatarkit.types import AvatarPrompt

    size = options.get("size")
    renderer: Any = options["renderer"]
    if size and parse_spec(renderer)[0] == "local":
        renderer = default_registry.create("renderer", renderer, size=size)
    face: Any = avatar
    if face is None:
        side = size or 512
        face = AvatarPrompt(seed=seed, width=side, height=side)
    return AvatarBot(
        chat=None, preprocessor=None, intent=None, sentiment=None, voice=voice,
        renderer=renderer, image=options["image"] if image else None, avatar=face, seed=seed,
    )  # fmt: skip


def render_item(item: dict[str, Any], out: str, options: dict[str, Any]) -> tuple[str, str | None]:
    """Render one item into ``out/<id>``; returns (id, error or None). Runs in a worker."""
    it = BatchItem.model_validate(item)
    try:
        key = (it.voice, it.avatar, it.seed, tuple(sorted(options.items())))
        bot = _bots.get(key)
        if bot is None:  # one bot per voice/avatar in each worker: models load once
            bot = _make_bot(it.voice or options["voice"], it.avatar, it.seed, options)
            _bots[key] = bot
        reply = bot.say_sync(it.text)
        if reply.voice is None:  # e.g. only emoji: the bot speaks nothing and renders nothing
            raise InputValidationError(
                "the text has nothing to speak (only emoji, markup or emotion tags?)",
                field="text",
            )
        if reply.video is None:
            raise InputValidationError("no video was rendered for the text", field="text")
        folder = Path(out) / it.id
        try:
            # Every file is written atomically and response.json last: its presence marks the
            # item done, so a failed save leaves the item to be redone by the next run.
            reply.save(folder)
        finally:  # the renderer's temporary copy: this item owns it
            discard_temporary_video(reply.video)
        return it.id, None
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return it.id, detail


def _validated(fields: Any, kind: str = "field") -> BatchItem:
    """``fields`` as a BatchItem, or an InputValidationError naming the field (column, key)."""
    try:
        return BatchItem.model_validate(fields)
    except ValidationError as exc:
        loc = exc.errors()[0]["loc"]
        raise InputValidationError(
            _describe(exc, kind), field=str(loc[0]) if loc else None
        ) from exc


def run_batch(
    items: Sequence[BatchItem] | str | Path,
    out: str | Path,
    *,
    executor: Executor = "process",
    workers: int | None = None,
    voice: str = "local",
    renderer: str = "local",
    image: str = "local",
    size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BatchReport:
    """Render every item not finished yet; return what was done, skipped and failed.

    Args:
        items: Items, or the path of a CSV/JSONL file.
        out: Output folder; one subfolder per item.
        executor: ``process`` (a local process pool, default), ``serial`` or ``ray``
            (a Ray cluster: ``ray.init()`` connects to ``RAY_ADDRESS`` or starts a local one).
        workers: Processes (default: the CPU count).
        voice: Voice spec for every item (an item's own ``voice`` overrides it).
        renderer: Renderer spec.
        image: Avatar image generator spec (items without an ``avatar`` portrait).
        size: Frame side in pixels for the local renderer and generated avatars, 64–2048
            (default: the avatar's own size, 512 for generated ones).
        progress: ``progress(done, total)`` after each item.

    Every item is checked before anything is written: its fields, and that its own ``voice``
    and ``avatar`` can be built here and rendered (no backend is called for that). A relative
    path is read from the batch file's folder, or from the current folder for items given in
    Python.

    Raises:
        InputValidationError: a bad size or worker count; bad items (one error lists each
            with its line or id and the reason: a bad field, a missing or unreadable portrait
            or recording, a voice that cannot work here); duplicate ids.
        ConfigurationError: an unknown executor, or a voice, renderer or image spec that
            cannot work here (unknown provider, missing key or extra).
    """
    if executor not in ("serial", "process", "ray"):
        raise ConfigurationError(f"unknown executor {executor!r}: use process, serial or ray")
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        raise MissingExtraError("the Ray executor", "ray", missing="ray")
    from avatarkit.render.local import MAX_SIZE, MIN_SIZE  # the local renderer's limits

    if size is not None and not MIN_SIZE <= size <= MAX_SIZE:
        raise InputValidationError(
            f"size must be {MIN_SIZE}–{MAX_SIZE} pixels, got {size}", field="size"
        )
    if workers is not None and workers < 1:
        raise InputValidationError(f"workers must be >= 1, got {workers}", field="workers")
    batch_file: Path | None = None
    if isinstance(items, (str, Path)):
        batch_file, rows = _read(items)
    else:  # validated again: a field changed after validation is not checked by pydantic
        rows = [(f"item {it.id!r}", it.model_dump()) for it in items]
    checked, problems = _check_fields(rows, batch_file)
    all_items = [it for _, it in checked]
    options: dict[str, Any] = {"voice": voice, "renderer": renderer, "image": image, "size": size}
    # The batch's specs are resolved once here, so that an unknown provider, a missing key or
    # extra fails at once with the error the other commands give, not once per item. The image
    # generator is only needed for items without a portrait.
    bot = _make_bot(voice, None, 0, options, image=any(it.avatar is None for it in all_items))
    # So is each row's own voice and portrait, and its text: a misspelt voice or a row of
    # emoji in the last row would otherwise be found after every other row was paid for.
    # One error lists every bad row.
    order = {where: n for n, (where, _) in enumerate(rows)}
    problems += _check_texts(checked, bot)
    problems += _check_backends(checked, options, problems)
    _refuse(sorted(problems, key=lambda problem: order[problem.where]), batch_file)
    if batch_file is not None:
        _refuse_duplicates(checked, batch_file)
    ids = [it.id for it in all_items]
    if any(not i for i in ids) or len(set(ids)) != len(ids):
        raise InputValidationError("every item needs a unique, non-empty id", field="id")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [it for it in all_items if not _is_done(out_dir / it.id)]
    report = BatchReport(skipped=[it.id for it in all_items if _is_done(out_dir / it.id)])
    payload = [(it.model_dump(), str(out_dir), options) for it in todo]
    total = len(all_items)
    started = time.perf_counter()

    def record(result: tuple[str, str | None]) -> None:
        item_id, error = result
        if error is None:
            report.done.append(item_id)
        else:
            report.failed[item_id] = error
        write_json_atomic(out_dir / "batch-report.json", report.model_dump())
        if progress:
            progress(len(report.done) + len(report.failed) + len(report.skipped), total)

    if executor == "serial":
        for args in payload:
            record(render_item(*args))
    elif executor == "process":
        if payload:  # no more workers than items: each worker is a process forked now
            _run_pool(payload, min(workers or os.cpu_count() or 1, len(payload)), record)
    else:
        _run_ray(payload, record)
    report.seconds = time.perf_counter() - started
    write_json_atomic(out_dir / "batch-report.json", report.model_dump())
    return report


_stop: Any = None
"""In a pool's worker: the batch's stop flag (a ``multiprocessing.Event``), set on Ctrl-C."""


def _start_worker(stop: Any) -> None:
    global _stop
    _stop = stop
    # The pool stops its workers with SIGTERM: the default action, whatever the parent set
    # (the CLI makes SIGTERM a Ctrl-C, which a worker would survive).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _pooled_item(item: dict[str, Any], out: str, options: dict[str, Any]) -> Any:
    """``render_item`` in a pool's worker, unless the batch was stopped: then nothing is done."""
    if _stop is not None and _stop.is_set():
        return item.get("id"), "not rendered: the batch was interrupted"
    try:
        return render_item(item, out, options)
    except KeyboardInterrupt:  # Ctrl-C reaches the workers too: stop the queue from here
        if _stop is not None:
            _stop.set()
        raise


def _run_pool(
    payload: Iterable[tuple[Any, ...]], workers: int, record: Callable[[Any], None]
) -> None:
    import multiprocessing

    stop = multiprocessing.Event()
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_start_worker, initargs=(stop,))
    submitted: list[Future[tuple[str, str | None]]] = []
    try:
        for args in payload:
            submitted.append(pool.submit(_pooled_item, *args))
        pending = set(submitted)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                record(fut.result())
    except BaseException:
        # Ctrl-C or a crash here: drop the queue instead of rendering it all before exiting.
        # The items the pool has not handed out are cancelled here (the pool's own
        # cancel_futures is lost when the pool is collected before its thread reads it), those
        # already queued for a worker are skipped by it, and the items in hand are waited for,
        # so that no worker outlives the command.
        stop.set()
        for fut in submitted:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


def _run_ray(payload: Sequence[tuple[Any, ...]], record: Callable[[Any], None]) -> None:
    try:
        import ray
    except ImportError as exc:
        raise MissingExtraError("the Ray executor", "ray", missing="ray") from exc
    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, log_to_driver=False)
    remote = ray.remote(render_item)
    refs = [remote.remote(*args) for args in payload]
    while refs:
        ready, refs = ray.wait(refs, num_returns=1)
        for ref in ready:
            record(ray.get(ref))
