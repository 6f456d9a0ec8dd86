"""Batch rendering: many scripts to talking-avatar clips, resumable, on a process pool or Ray.

Input is CSV or JSONL with a ``text`` column and optional ``id``, ``avatar`` (a portrait path;
a relative one is read from the batch file's folder), ``voice`` (a spec) and ``seed``. Each
item lands in ``<out>/<id>/``; ``response.json`` is written last and atomically, so a rerun
skips items that finished and redoes the rest. Failures are collected per item in
``<out>/batch-report.json`` instead of stopping the batch.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from avatarkit._files import discard_temporary_video, write_json_atomic
from avatarkit.errors import ConfigurationError, InputValidationError, MissingExtraError

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
    """Voice spec for this item (default: the batch's voice)."""
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

    The file is UTF-8, with or without a byte-order mark (Excel's "CSV UTF-8"). Problems are
    reported with the file's line number. A relative ``avatar`` path is read from the batch
    file's folder (not the current one), and made absolute.

    Raises:
        InputValidationError: unreadable file, a row without text, a missing portrait file,
            or duplicate ids.
    """
    p = Path(path)
    if not p.is_file():
        raise InputValidationError(f"batch file {p} does not exist", field="path")
    suffix = p.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv"):
        raise InputValidationError(f"{p}: use a .csv or .jsonl file", field="path")
    kind = "column" if suffix == ".csv" else "key"
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
    items: list[BatchItem] = []
    for n, (line, row) in enumerate(rows, 1):
        item = _validated(row, f"{p} line {line} (item {n})", kind)
        if not item.id:
            item.id = f"{n:05d}-" + hashlib.sha1(item.text.encode()).hexdigest()[:8]
        if item.avatar is not None:
            item.avatar = _portrait(p, item.avatar, f"{p} line {line} (item {n})")
        items.append(item)
    counts = Counter(i.id for i in items)
    dupes = sorted(i for i, k in counts.items() if k > 1)
    if dupes:
        raise InputValidationError(f"{p}: duplicate ids {', '.join(dupes[:5])}", field="id")
    return items


_FIELDS = tuple(BatchItem.model_fields)


def _portrait(batch_file: Path, avatar: str, where: str) -> str:
    """The absolute path of a row's portrait: a relative one is read from the file's folder."""
    path = Path(avatar).expanduser()
    if not path.is_absolute():
        path = batch_file.parent.resolve() / path
    if not path.is_file():
        raise InputValidationError(
            f"{where}: avatar: {path} does not exist (a relative path is read from the batch "
            "file's folder)",
            field="avatar",
        )
    return str(path)


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
    voice: str, avatar: str | None, seed: int, options: dict[str, Any], *, image: bool = True
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


def _validated(fields: Any, where: str, kind: str = "field") -> BatchItem:
    """``fields`` as a BatchItem, or an InputValidationError naming ``where`` and the field."""
    try:
        return BatchItem.model_validate(fields)
    except ValidationError as exc:
        loc = exc.errors()[0]["loc"]
        raise InputValidationError(
            f"{where}: {_describe(exc, kind)}", field=str(loc[0]) if loc else None
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

    Raises:
        InputValidationError: a bad item, size or worker count, before anything is written.
        ConfigurationError: an unknown executor, or a voice, renderer or image spec that
            cannot work here (unknown provider, missing key or extra), before anything is
            written. An item's own ``voice`` is resolved with the item: when it fails, that
            item fails.
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
    if isinstance(items, (str, Path)):
        all_items = read_items(items)  # validated as read
    else:  # again: a field changed after validation is not checked by pydantic
        all_items = [_validated(it.model_dump(), f"item {it.id!r}") for it in items]
    ids = [it.id for it in all_items]
    if any(not i for i in ids) or len(set(ids)) != len(ids):
        raise InputValidationError("every item needs a unique, non-empty id", field="id")
    options: dict[str, Any] = {"voice": voice, "renderer": renderer, "image": image, "size": size}
    # The batch's specs are resolved once here, so that an unknown provider, a missing key or
    # extra fails at once with the error the other commands give, not once per item. The image
    # generator is only needed for items without a portrait.
    _make_bot(voice, None, 0, options, image=any(it.avatar is None for it in all_items))
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
        _run_pool(payload, workers or os.cpu_count() or 1, record)
    else:
        _run_ray(payload, record)
    report.seconds = time.perf_counter() - started
    write_json_atomic(out_dir / "batch-report.json", report.model_dump())
    return report


def _run_pool(
    payload: Iterable[tuple[Any, ...]], workers: int, record: Callable[[Any], None]
) -> None:
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        pending: set[Future[tuple[str, str | None]]] = {
            pool.submit(render_item, *a) for a in payload
        }
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                record(fut.result())
    except BaseException:
        # Ctrl-C or a crash here: drop the queue instead of rendering it all before exiting.
        pool.shutdown(wait=False, cancel_futures=True)
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
