"""Atomic file writes: a temporary file beside the target, then one rename."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

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
    earlier = _earlier_reply_files(folder)
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
    for name in earlier - {p.name for p in written.values()}:
        _remove_earlier(folder / name)
    return written


_OWN_NAME_RE = re.compile(r"(?:speech|avatar|video)\.[a-z0-9]+|frames|timeline\.json")
"""The names ``save_response`` gives a reply's files (besides response.json)."""


def _earlier_reply_files(folder: Path) -> set[str]:
    """The files of a reply saved in ``folder`` before, as its response.json lists them.

    Only names ``save_response`` itself gives are counted: a file it did not write is not ours.
    """
    try:
        summary = json.loads((folder / "response.json").read_bytes())
    except (OSError, ValueError):
        return set()
    files = summary.get("files") if isinstance(summary, dict) else None
    if not isinstance(files, dict):
        return set()
    return {n for n in files.values() if isinstance(n, str) and _OWN_NAME_RE.fullmatch(n)}


def _remove_earlier(path: Path) -> None:
    """Remove a file (or the frames folder) of the reply saved before; the new one is in place."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:  # the new reply is saved; a file left over is only noise
        # the stdlib logger, not avatarkit.config's helper: this module sits below config
        logging.getLogger("avatarkit.files").warning(
            "could not remove %s of the reply saved before: %s", path, exc.strerror or exc
        )


_BYTES_PER_SAMPLE = {"pcm_s16le": 2, "ulaw": 1}
"""Headerless voice formats: their length follows from the byte count and the recorded rate."""


def _cut_off_riff(data: bytes) -> bool:
    """Whether a RIFF (WAV) file is shorter than its header says: cut off by a copy or a disk.

    libsndfile reads such a file up to where it ends, so a truncated speech.wav would load as
    a shorter reply. A size of 0 or 0xFFFFFFFF (a stream's unknown length) is not checked.
    """
    if len(data) < 8 or data[:4] not in (b"RIFF", b"RIFX"):
        return False
    size = int.from_bytes(data[4:8], "little" if data[:4] == b"RIFF" else "big")
    return size not in (0, 0xFFFFFFFF) and size + 8 > len(data)


def _audio_length(data: bytes, fmt: str, voice: dict[str, Any]) -> tuple[int, float] | None:
    """Sample rate and duration of saved speech; None when the bytes are not such audio.

    A container's header says both (soundfile reads it, decoding nothing); headerless PCM and
    µ-law take the rate and channels ``response.json`` recorded, and AAC, which soundfile does
    not read, its duration too.
    """
    if fmt not in (*_BYTES_PER_SAMPLE, "aac"):
        import soundfile as sf

        if _cut_off_riff(data):
            return None

        try:
            info = sf.info(io.BytesIO(data))
        except (sf.LibsndfileError, RuntimeError, TypeError):
            return None
        return int(info.samplerate), info.frames / info.samplerate
    rate, channels, duration = (voice.get(k) for k in ("sample_rate", "channels", "duration"))
    if not data or not isinstance(rate, int) or rate < 1:
        return None
    if fmt == "aac":
        return (rate, float(duration)) if isinstance(duration, int | float) else None
    width = _BYTES_PER_SAMPLE[fmt] * (channels if isinstance(channels, int) and channels > 0 else 1)
    return rate, len(data) // width / rate


def load_response(folder: Path) -> Response:
    """Read a Response back from a folder ``save_response`` wrote; see ``Response.load``."""
    from avatarkit._image import read_picture
    from avatarkit.errors import InputValidationError
    from avatarkit.types import RESPONSE_VERSION, Response, Timeline, _from_json, _known_version

    def refuse(message: str) -> NoReturn:
        raise InputValidationError(message, field="folder")

    def read(path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            refuse(f"cannot read {path}: {exc.strerror or exc}")

    if not folder.exists():
        refuse(f"{folder} does not exist")
    if not folder.is_dir():
        refuse(f"{folder} is a file, not a folder; give the folder Response.save wrote")
    summary_path = folder / "response.json"
    if not summary_path.is_file():
        refuse(f"{folder} holds no response.json: not a saved reply (Response.save writes one)")
    try:
        summary = json.loads(read(summary_path))
    except ValueError as exc:  # not JSON, or not UTF-8
        refuse(f"{summary_path} is not JSON: {exc}")
    files = summary.get("files") if isinstance(summary, dict) else None
    if not isinstance(files, dict) or "input" not in summary:
        refuse(f"{summary_path} is not a summary that Response.save wrote (no files and input)")
    version = summary.get("version", 1)
    if isinstance(version, int):  # a newer layout is refused before its files are looked for
        try:
            _known_version("response", version, RESPONSE_VERSION)
        except InputValidationError as exc:
            refuse(f"{summary_path}: {exc}")

    def listed(kind: str, part: str) -> tuple[Path, dict[str, Any]] | None:
        """The file listed for ``kind`` and the summary's ``part`` it belongs to, both or none."""
        name, fields = files.get(kind), summary.get(part)
        if name is None and fields is None:
            return None
        if name is None:
            refuse(f"{summary_path} has a {part} but lists no file for its {kind}")
        if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
            refuse(f"{summary_path}: the {kind} file {name!r} is not a file name in {folder}")
        if not isinstance(fields, dict):
            refuse(f"{summary_path} lists {name} but no {part} to go with it")
        path = folder / name
        if not path.exists():
            refuse(f"{path} is missing (response.json lists it as the reply's {kind})")
        return path, fields

    data = {k: v for k, v in summary.items() if k != "files"}
    if (audio := listed("audio", "voice")) is not None:
        path, voice = audio
        raw, fmt = read(path), voice.get("format", "wav")
        length = _audio_length(raw, fmt, voice) if isinstance(fmt, str) else None
        if length is None:
            refuse(f"{path}: cannot decode it as {fmt} audio (or it is cut off)")
        rate, duration = length
        data["voice"] = {**voice, "audio": raw, "sample_rate": rate, "duration": duration}
    if (picture := listed("image", "image")) is not None:
        path, image = picture
        raw = read(path)
        try:
            info = read_picture(raw, verify=True)
        except InputValidationError as exc:
            refuse(f"{path} is {exc}")
        if info.format not in ("png", "jpeg", "webp"):
            refuse(f"{path} is a {info.format} picture; an avatar is a PNG, JPEG or WebP")
        size = {"format": info.format, "width": info.width, "height": info.height}
        data["image"] = {**image, "data": raw, **size}
    if (timeline := listed("timeline", "timeline")) is not None:
        try:
            loaded = Timeline.from_json(read(timeline[0]))
        except InputValidationError as exc:
            refuse(f"{timeline[0]}: {exc}")
        ref = timeline[1].get("audio_ref")  # timeline.json names the audio; the reply's may not
        data["timeline"] = loaded.model_copy(
            update={"audio_ref": ref if isinstance(ref, str) else None}
        )
    if (video := listed("video", "video")) is not None:
        # absolute: the reply stays usable after a change of the current folder
        data["video"] = {**video[1], "path": video[0].absolute()}
    try:
        return _from_json(Response, data, "response")
    except InputValidationError as exc:
        refuse(f"{summary_path}: {exc}")
