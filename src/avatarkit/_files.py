"""Atomic file writes: a temporary file beside the target, then one rename."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from avatarkit.types import AvatarVideo, Response


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def write_atomic(path: Path, writer: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``writer`` on a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; saved results are ordinary files
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def probe_writable(folder: Path) -> None:
    """Create and remove a file in ``folder``; raises the ``OSError`` a write would meet."""
    fd, probe = tempfile.mkstemp(prefix=".avatarkit-", suffix=".probe", dir=folder)
    os.close(fd)
    os.unlink(probe)


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return write_atomic(path, lambda fh: fh.write(data))


def copy_atomic(src: Path, dst: Path) -> Path:
    """Copy the file ``src`` to ``dst`` atomically; a folder (PNG frames) is copied whole."""
    if src.is_dir():
        return _copy_folder_atomic(src, dst)

    def _copy(fh: IO[bytes]) -> None:
        with src.open("rb") as s:
            shutil.copyfileobj(s, fh, 1 << 20)

    return write_atomic(dst, _copy)


def _copy_folder_atomic(src: Path, dst: Path) -> Path:
    """Copy the folder ``src`` beside ``dst``, then rename it into place (replacing ``dst``)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent))
    old: Path | None = None
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        if dst.is_dir():  # a folder cannot be renamed over another: move the old one aside
            old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
            os.replace(dst, old / dst.name)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / dst.name).exists() and not dst.exists():
            os.replace(old / dst.name, dst)  # put the previous copy back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return dst


TEMP_VIDEO_PREFIX = "avatarkit-video-"
"""Folders that renderers make for a video rendered without ``output=`` start with this."""


def discard_temporary_video(video: AvatarVideo) -> None:
    """Remove ``video`` if it lies in a temporary folder a renderer made for it, folder too.

    A video anywhere else (a path the caller chose, the reply cache) is left alone.
    """
    folder = video.path.parent
    if folder.name.startswith(TEMP_VIDEO_PREFIX) and folder.parent == Path(tempfile.gettempdir()):
        shutil.rmtree(folder, ignore_errors=True)


def write_json_atomic(path: Path, obj: Any) -> Path:
    """Write ``obj`` as indented UTF-8 JSON, atomically."""
    data = json.dumps(obj, indent=2, ensure_ascii=False).encode()
    return write_bytes_atomic(path, data)


def save_response(response: Response, folder: Path) -> dict[str, Path]:
    """Write every part of a Response into ``folder``; see ``Response.save``."""
    from avatarkit.errors import InputValidationError

    if folder.exists() and not folder.is_dir():
        raise InputValidationError(f"{folder} exists and is not a folder", field="folder")
    blocked = next((p for p in folder.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise InputValidationError(
            f"cannot save into {folder}: {blocked} is a file", field="folder"
        )
    if response.video is not None and not response.video.path.exists():
        raise InputValidationError(
            f"the reply's video {response.video.path} no longer exists (a temporary file "
            "that was moved or deleted); nothing was saved",
            field="video",
        )
    written: dict[str, Path] = {}
    if response.voice is not None:
        ext = {"pcm_s16le": "pcm", "ulaw": "ulaw"}.get(response.voice.format, response.voice.format)
        written["audio"] = write_bytes_atomic(folder / f"speech.{ext}", response.voice.audio)
    if response.image is not None:
        ext = "jpg" if response.image.format == "jpeg" else response.image.format
        written["image"] = write_bytes_atomic(folder / f"avatar.{ext}", response.image.data)
    if response.video is not None:
        video_name = "frames" if response.video.path.is_dir() else f"video.{response.video.format}"
        target = folder / video_name
        if response.video.path.resolve() != target.resolve():
            copy_atomic(response.video.path, target)
        written["video"] = target
    if response.timeline is not None:
        timeline = response.timeline.model_copy()
        if "audio" in written:
            timeline.audio_ref = written["audio"].name
        written["timeline"] = write_bytes_atomic(
            folder / "timeline.json", timeline.model_dump_json(indent=2).encode()
        )
    # response.json describes the turn; the media live in their own files beside it.
    summary = response.model_dump(mode="json", exclude={"voice": {"audio"}, "image": {"data"}})
    summary["files"] = {k: p.name for k, p in written.items()}
    if "video" in written:
        summary["video"]["path"] = written["video"].name
    written["response"] = write_json_atomic(folder / "response.json", summary)
    return written
