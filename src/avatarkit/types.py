"""The data model: every object that flows down a turn, as pydantic models with a JSON round-trip.

Times are seconds on the clock of the utterance's audio (0 = first sample). Binary payloads
(audio, images) serialise to base64 in JSON.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import uuid
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from avatarkit._image import read_picture
from avatarkit.errors import InputValidationError

__all__ = [
    "OCULUS_VISEMES",
    "OUT_OF_SCOPE",
    "PROVENANCE_KEY",
    "RESPONSE_VERSION",
    "TIMELINE_VERSION",
    "AudioFormat",
    "AvatarImage",
    "AvatarPose",
    "AvatarPrompt",
    "AvatarVideo",
    "ChatMessage",
    "DialogueResponse",
    "DialogueState",
    "DialogueTurn",
    "Emotion",
    "FacialExpression",
    "Intent",
    "IntentPrediction",
    "LipSync",
    "PhonemeTiming",
    "ProcessedText",
    "Response",
    "Sentiment",
    "StageMetrics",
    "Timeline",
    "UserInput",
    "VisemeCue",
    "VisemeSource",
    "VoiceOutput",
    "WordTiming",
    "check_visemes",
    "provenance_from_text",
    "video_format_of",
]

TIMELINE_VERSION = 1
"""Version of the Timeline JSON layout; bumped on incompatible change."""

RESPONSE_VERSION = 1
"""Version of the Response JSON layout (also ``response.json``'s); bumped on incompatible change."""

PROVENANCE_KEY = "avatarkit"
"""PNG text chunk holding an avatar's provenance dict as JSON (how the picture was made)."""


class _Model(BaseModel):
    """Base for avatarkit models: strict about unknown fields, bytes as base64 in JSON."""

    model_config = ConfigDict(
        extra="forbid", ser_json_bytes="base64", val_json_bytes="base64", frozen=False
    )


_M = TypeVar("_M", bound=BaseModel)


def _known_version(kind: str, version: int, current: int) -> int:
    """``version`` of a ``kind`` layout, refused when newer than ``current`` or below 1."""
    if version > current:
        raise InputValidationError(
            f"{kind} version {version} is newer than this avatarkit reads (up to {current}); "
            "upgrade avatarkit to read it",
            field=kind,
        )
    if version < 1:
        raise InputValidationError(
            f"{kind} version {version} does not exist (versions start at 1)", field=kind
        )
    return version


def _from_json(model: type[_M], data: str | bytes | dict[str, Any], kind: str) -> _M:
    """``model`` read from JSON or its parsed object; any refusal is an InputValidationError.

    A refusal by the models' own checks (a newer version, an unknown viseme) keeps its message:
    a newer layout's unknown fields would otherwise hide the real reason among pydantic's.
    """
    try:
        if isinstance(data, dict):
            return model.model_validate(data)
        return model.model_validate_json(data)
    except ValidationError as exc:
        own: InputValidationError | None = next(
            (
                e["ctx"]["error"]
                for e in exc.errors()
                if isinstance(e.get("ctx", {}).get("error"), InputValidationError)
            ),
            None,
        )
        if own is None:
            raise InputValidationError(f"not a valid avatarkit {kind}: {exc}", field=kind) from exc
    raise InputValidationError(own.message, field=own.field)


def _new_id() -> str:
    return uuid.uuid4().hex[:16]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------- user input & NLP


class UserInput(_Model):
    """What the user said or typed, with the session it belongs to."""

    text: str
    """The raw text as received."""
    session_id: str = "default"
    """Conversation this input belongs to."""
    language: str | None = None
    """BCP-47 language tag when known (``"en"``, ``"de-DE"``)."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Free-form data from the caller (channel, user id...)."""
    received_at: dt.datetime = Field(default_factory=_now)


class ProcessedText(_Model):
    """The result of text preprocessing."""

    original: str
    """Input text before any change."""
    normalized: str
    """Unicode-normalised, whitespace-collapsed text (case kept unless lowercasing was on)."""
    tokens: list[str] = Field(default_factory=list)
    """Word tokens of the normalised text."""
    content_tokens: list[str] = Field(default_factory=list)
    """Tokens after stop-word removal (equal to ``tokens`` when that step is off)."""
    stems: list[str] = Field(default_factory=list)
    """Stem of each content token (empty when stemming is off)."""
    lemmas: list[str] = Field(default_factory=list)
    """Lemma of each content token (empty when no lemmatiser is available or it is off)."""
    language: str = "en"
    """Language the steps were run for."""


class Intent(_Model):
    """One intent with its confidence in [0, 1]."""

    name: str
    confidence: float = Field(ge=0.0, le=1.0)


OUT_OF_SCOPE = "out_of_scope"
"""The intent every classifier gives when no intent is confident enough."""


class IntentPrediction(_Model):
    """Ranked intents for one input; ``top`` is ``out_of_scope`` below the threshold."""

    intents: list[Intent]
    """All candidate intents, best first."""
    top: str
    """The chosen intent, or ``"out_of_scope"``."""
    detected: list[str] = Field(default_factory=list)
    """Every intent judged present (more than one for multi-intent input)."""
    backend: str = ""
    """Which classifier produced this."""

    @property
    def confidence(self) -> float:
        """Confidence of the best intent (0 when there is none)."""
        return self.intents[0].confidence if self.intents else 0.0


class Emotion(StrEnum):
    """Facial emotions the expression layer and renderers understand."""

    NEUTRAL = "neutral"
    HAPPY = "happy"
    SAD = "sad"
    ANGRY = "angry"
    SURPRISED = "surprised"
    THINKING = "thinking"
    FEARFUL = "fearful"
    DISGUSTED = "disgusted"


class Sentiment(_Model):
    """Sentiment of a text: VADER-style scores plus the emotion they suggest."""

    compound: float = Field(ge=-1.0, le=1.0)
    """Overall polarity in [-1, 1]."""
    positive: float = Field(default=0.0, ge=0.0, le=1.0)
    negative: float = Field(default=0.0, ge=0.0, le=1.0)
    neutral: float = Field(default=1.0, ge=0.0, le=1.0)
    label: Literal["positive", "negative", "neutral"] = "neutral"
    emotion: Emotion = Emotion.NEUTRAL
    """The emotion this sentiment suggests for the face."""
    backend: str = ""


# --------------------------------------------------------------------------- dialogue


class ChatMessage(_Model):
    """One message of a chat-model conversation."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    name: str | None = None
    intent: str | None = None
    """For a user message: the intent the understanding stage found (``None`` when out of
    scope). Never sent to remote models; local backends may answer from it."""
    sentiment: Literal["positive", "negative", "neutral"] | None = None
    """For a user message: its sentiment label, likewise."""


class DialogueTurn(_Model):
    """One exchange kept in the dialogue history."""

    user: str
    assistant: str
    intent: str | None = None
    emotion: Emotion | None = None
    at: dt.datetime = Field(default_factory=_now)


class DialogueState(_Model):
    """The conversation so far: history, context and slots for one session."""

    session_id: str = "default"
    turns: list[DialogueTurn] = Field(default_factory=list)
    context: dict[str, Any] = Field(default_factory=dict)
    """Free-form facts the dialogue keeps (user's name, topic...)."""
    slots: dict[str, Any] = Field(default_factory=dict)
    """Slot values filled across turns (date, time, email...)."""


class DialogueResponse(_Model):
    """What the avatar will say, with why."""

    text: str
    """The text to speak, with emotion tags removed."""
    raw_text: str | None = None
    """The chat model's text before tags were stripped, when different."""
    emotion_tags: list[str] = Field(default_factory=list)
    """Emotion tags the model emitted (``[happy]`` → ``"happy"``), in order."""
    intent: str | None = None
    """Intent this answers, when known."""
    handled_by: str = ""
    """Which handler or chat model wrote it."""


# --------------------------------------------------------------------------- voice & timeline


AudioFormat = Literal["wav", "mp3", "pcm_s16le", "ogg", "flac", "opus", "aac", "ulaw"]
"""Encodings of ``VoiceOutput.audio``; ``pcm_s16le`` is headerless 16-bit little-endian."""


class WordTiming(_Model):
    """One word of the spoken text with its time span and place in the input string."""

    text: str
    """The word exactly as it appears in the input (``text[char_start:char_end]``)."""
    start: float = Field(ge=0.0)
    end: float = Field(ge=0.0)
    char_start: int = Field(default=-1, ge=-1)
    """Offset of the word's first character in the input text (-1 when unknown)."""
    char_end: int = Field(default=-1, ge=-1)
    """Offset one past the word's last character (-1 when unknown)."""


class PhonemeTiming(_Model):
    """One phoneme (IPA) with its time span."""

    phoneme: str
    """IPA symbol(s), e.g. ``"p"``, ``"aɪ"``, ``"tʃ"``; ``"_"`` for a pause."""
    start: float = Field(ge=0.0)
    end: float = Field(ge=0.0)
    word_index: int | None = None
    """Index into the word list of the word this phoneme belongs to."""
    stress: int = 0
    """0 unstressed, 1 primary, 2 secondary (when the voice reports it)."""


class VoiceOutput(_Model):
    """Synthesised speech: the audio and what is said when."""

    audio: bytes
    """Encoded audio in ``format``."""
    format: AudioFormat = "wav"
    sample_rate: int = Field(gt=0)
    channels: int = Field(default=1, ge=1)
    duration: float = Field(ge=0.0)
    """Length of the audio in seconds."""
    text: str = ""
    """The text that was spoken (timings refer to it)."""
    words: list[WordTiming] = Field(default_factory=list)
    phonemes: list[PhonemeTiming] = Field(default_factory=list)
    marks: list[tuple[str, float]] = Field(default_factory=list)
    """SSML ``<mark name="...">`` names with the time (seconds) the voice reached them."""
    voice: str = ""
    """Backend and voice that spoke, e.g. ``"espeak:en-us+f3"``."""

    def __repr__(self) -> str:
        return (
            f"VoiceOutput(format={self.format!r}, duration={self.duration:.3f}, "
            f"sample_rate={self.sample_rate}, words={len(self.words)}, "
            f"phonemes={len(self.phonemes)}, voice={self.voice!r}, audio=<{len(self.audio)} bytes>)"
        )

    def __str__(self) -> str:
        """The short repr: ``print(voice)`` never dumps the audio."""
        return repr(self)

    def _repr_html_(self) -> str:
        mime = {"wav": "audio/wav", "mp3": "audio/mpeg", "ogg": "audio/ogg", "flac": "audio/flac"}
        if self.format not in mime:
            return f"<pre>{html.escape(repr(self))}</pre>"
        b64 = base64.b64encode(self.audio).decode()
        return f'<audio controls src="data:{mime[self.format]};base64,{b64}"></audio>'


OCULUS_VISEMES: tuple[str, ...] = (
    "sil",
    "PP",
    "FF",
    "TH",
    "DD",
    "kk",
    "CH",
    "SS",
    "nn",
    "RR",
    "aa",
    "E",
    "ih",
    "oh",
    "ou",
)
"""The 15 Oculus/Meta visemes, in their index order (sil = 0 … ou = 14): the names cues carry."""

_KNOWN_VISEMES = frozenset(OCULUS_VISEMES)

VisemeSource = Literal["phonemes", "words", "audio", "provider", "none"]
"""Where viseme cues came from, best first: voice phonemes, word timings + G2P, the waveform."""


class VisemeCue(_Model):
    """One mouth shape (Oculus viseme name) held from ``start`` to ``end``."""

    viseme: str
    """Oculus/Meta viseme: sil PP FF TH DD kk CH SS nn RR aa E ih oh ou."""
    start: float = Field(ge=0.0)
    end: float = Field(ge=0.0)
    weight: float = Field(default=1.0, ge=0.0, le=1.0)
    """How far the mouth goes into the shape (for blending)."""
    source: VisemeSource = "phonemes"


def check_visemes(cues: Sequence[VisemeCue], *, track: str = "visemes") -> None:
    """Refuse cues whose viseme is not one of :data:`OCULUS_VISEMES`.

    Timelines and LipSync results check their cues when built or loaded; this is for cues
    edited in place afterwards. ``track`` names the list in the message (``visemes[3]``).

    Raises:
        InputValidationError: naming the first unknown cue and the known names.
    """
    unknown = [(i, c.viseme) for i, c in enumerate(cues) if c.viseme not in _KNOWN_VISEMES]
    if not unknown:
        return
    i, name = unknown[0]
    same = [v for v in OCULUS_VISEMES if v.lower() == name.lower()]
    hint = f" (did you mean {same[0]!r}?)" if same else ""
    more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
    raise InputValidationError(
        f"unknown viseme {name!r} in {track}[{i}]{more}{hint}; expected one of "
        f"{', '.join(OCULUS_VISEMES)}",
        field=track,
    )


class LipSync(_Model):
    """Viseme cues for one utterance and where they came from."""

    cues: list[VisemeCue] = Field(default_factory=list)
    """Oculus visemes only: a cue with another name is refused."""
    source: VisemeSource = "none"
    duration: float = 0.0

    @field_validator("cues")
    @classmethod
    def _known_visemes(cls, cues: list[VisemeCue]) -> list[VisemeCue]:
        check_visemes(cues, track="cues")
        return cues


class FacialExpression(_Model):
    """An expression keyframe: from ``time`` on, the face moves to ``emotion`` at ``intensity``."""

    time: float = Field(default=0.0, ge=0.0)
    char_offset: int | None = Field(default=None, ge=0)
    """Where in the reply text it starts; the timeline builder sets ``time`` from word timings."""
    emotion: Emotion = Emotion.NEUTRAL
    intensity: float = Field(default=0.5, ge=0.0, le=1.0)
    transition: float = Field(default=0.3, ge=0.0)
    """Seconds taken to blend in from the previous expression."""


class AvatarPose(_Model):
    """A head-and-eyes keyframe. Angles are degrees; gaze is in [-1, 1]; blink is eyelid closure."""

    time: float = Field(ge=0.0)
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    gaze_x: float = Field(default=0.0, ge=-1.0, le=1.0)
    gaze_y: float = Field(default=0.0, ge=-1.0, le=1.0)
    blink: float = Field(default=0.0, ge=0.0, le=1.0)


class Timeline(_Model):
    """Everything that happens in one utterance, on the audio's clock.

    Renderers consume it; it exports to JSON, Rhubarb ``mouthCues`` and a browser
    avatar's input (see ``avatarkit.animation``).
    """

    version: int = TIMELINE_VERSION
    """Layout version; one above :data:`TIMELINE_VERSION` (a newer avatarkit's) is refused."""
    text: str = ""
    duration: float = Field(default=0.0, ge=0.0)
    words: list[WordTiming] = Field(default_factory=list)
    phonemes: list[PhonemeTiming] = Field(default_factory=list)
    visemes: list[VisemeCue] = Field(default_factory=list)
    """Oculus visemes only (:data:`OCULUS_VISEMES`): a cue with another name is refused."""
    viseme_source: VisemeSource = "none"
    expressions: list[FacialExpression] = Field(default_factory=list)
    poses: list[AvatarPose] = Field(default_factory=list)
    audio_ref: str | None = None
    """File name of the audio this timeline belongs to, when saved beside it."""

    @field_validator("version")
    @classmethod
    def _known_version(cls, version: int) -> int:
        return _known_version("timeline", version, TIMELINE_VERSION)

    @field_validator("visemes")
    @classmethod
    def _known_visemes(cls, cues: list[VisemeCue]) -> list[VisemeCue]:
        check_visemes(cues)
        return cues

    @classmethod
    def from_json(cls, data: str | bytes) -> Self:
        """Read Timeline JSON (``timeline.json``, ``model_dump_json()``).

        Raises:
            InputValidationError: not valid Timeline JSON, a cue with an unknown viseme, or
                written by a newer avatarkit (``version`` above :data:`TIMELINE_VERSION`).
        """
        return _from_json(cls, data, "timeline")

    def problems(self) -> list[str]:
        """Consistency problems: unsorted or overlapping cues, times outside the audio.

        Returns an empty list for a consistent timeline.
        """
        out: list[str] = []
        eps = 1e-6
        tracks: dict[str, list[tuple[float, float]]] = {
            "words": [(w.start, w.end) for w in self.words],
            "phonemes": [(p.start, p.end) for p in self.phonemes],
            "visemes": [(v.start, v.end) for v in self.visemes],
            "expressions": [(e.time, e.time) for e in self.expressions],
            "poses": [(p.time, p.time) for p in self.poses],
        }
        for name, spans in tracks.items():
            prev_start = -1.0
            for i, (start, end) in enumerate(spans):
                if end < start - eps:
                    out.append(f"{name}[{i}] ends ({end:.3f}) before it starts ({start:.3f})")
                if start < prev_start - eps:
                    out.append(f"{name}[{i}] starts before {name}[{i - 1}]")
                if end > self.duration + eps:
                    out.append(
                        f"{name}[{i}] ends at {end:.3f}, after the audio ({self.duration:.3f})"
                    )
                prev_start = start
        return out

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= 40 else self.text[:39] + "…"
        return (
            f"Timeline(version={self.version}, duration={self.duration:.3f}, text={text!r}, "
            f"words={len(self.words)}, phonemes={len(self.phonemes)}, "
            f"visemes={len(self.visemes)}, viseme_source={self.viseme_source!r}, "
            f"expressions={len(self.expressions)}, poses={len(self.poses)}, "
            f"audio_ref={self.audio_ref!r})"
        )

    def __str__(self) -> str:
        """The short repr: tracks as counts (a long reply has thousands of cues)."""
        return repr(self)

    def viseme_at(self, t: float) -> str:
        """The viseme shown at time ``t`` (``"sil"`` outside any cue)."""
        for cue in self.visemes:
            if cue.start <= t < cue.end:
                return cue.viseme
        return "sil"


# --------------------------------------------------------------------------- media


class AvatarPrompt(_Model):
    """What avatar picture to make: a prompt for image models, a seed for procedural faces."""

    prompt: str = "a friendly person, portrait, looking at the camera"
    negative: str = ""
    """Negative prompt: what the picture must not show."""
    seed: int | None = None
    """Fixed seed for reproducible images (``None``: random)."""
    width: int = Field(default=512, ge=64, le=4096)
    height: int = Field(default=512, ge=64, le=4096)
    steps: int = Field(default=30, ge=1, le=500)
    guidance: float = Field(default=7.0, ge=0.0, le=50.0)
    style: dict[str, Any] = Field(default_factory=dict)
    """Backend-specific options (procedural face parameters, sampler, model override...)."""

    def __init__(self, prompt: str | None = None, /, **data: Any) -> None:
        if prompt is not None:
            data["prompt"] = prompt
        super().__init__(**data)


class AvatarImage(_Model):
    """The avatar's picture (PNG or JPEG bytes) with how it was made."""

    data: bytes
    format: Literal["png", "jpeg", "webp"] = "png"
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    kind: Literal["procedural", "photo"] = "photo"
    """``procedural``: a parametric face the local renderer redraws; ``photo``: any portrait."""
    face_box: tuple[int, int, int, int] | None = None
    """Face rectangle (left, top, width, height) in pixels, when known."""
    provenance: dict[str, Any] = Field(default_factory=dict)
    """How it was made: prompt, negative prompt, seed, model, embeddings, style parameters."""

    @classmethod
    def load(
        cls, path: str | Path, *, kind: Literal["procedural", "photo"] | None = None
    ) -> AvatarImage:
        """Read an avatar picture from a PNG, JPEG or WebP file.

        A PNG that avatarkit made keeps its provenance in a text chunk
        (:data:`PROVENANCE_KEY`), and loading restores it: a procedural face comes back as
        ``kind="procedural"``, which the local renderer redraws from its parameters, with its
        face box. Any other picture is a ``photo``. ``kind`` overrides the choice, e.g.
        ``"photo"`` to animate an edited copy of a procedural face as a picture.

        Raises:
            InputValidationError: the file is missing or unreadable, or is not a PNG, JPEG or
                WebP image; or ``kind="procedural"`` for a picture without a procedural record.
        """
        if kind not in (None, "procedural", "photo"):
            raise InputValidationError(
                f"kind must be 'procedural', 'photo' or None, got {kind!r}", field="kind"
            )
        path = Path(path)
        if path.is_dir():
            raise InputValidationError(
                f"avatar image {path} is a folder; give the picture's file", field="path"
            )
        if not path.is_file():
            raise InputValidationError(f"avatar image {path} does not exist", field="path")
        data = path.read_bytes()
        try:
            picture = read_picture(data)
        except InputValidationError as exc:
            raise InputValidationError(
                f"{path} is {exc}; use a PNG, JPEG or WebP image", field="path"
            ) from exc
        fmt = picture.format
        if fmt not in ("png", "jpeg", "webp"):
            raise InputValidationError(
                f"{path}: use a PNG, JPEG or WebP image (got {fmt or 'an unknown format'})",
                field="path",
            )
        provenance = provenance_from_text(picture.text.get(PROVENANCE_KEY))
        redrawable = provenance.get("generator") == "procedural" and (
            isinstance(provenance.get("params"), dict) or isinstance(provenance.get("seed"), int)
        )
        if kind == "procedural" and not redrawable:
            raise InputValidationError(
                f"{path} carries no procedural avatar's parameters, so it cannot be redrawn; "
                "load it as a photo",
                field="kind",
            )
        box = provenance.get("face_box")
        face_box = None
        if isinstance(box, list) and len(box) == 4 and all(type(v) is int for v in box):
            face_box = (box[0], box[1], box[2], box[3])
        return cls(
            data=data,
            format=fmt,  # one of the three, checked above
            width=picture.width,
            height=picture.height,
            kind=kind or ("procedural" if redrawable else "photo"),
            face_box=face_box,
            provenance={**provenance, "source": str(path)},
        )

    def __repr__(self) -> str:
        return (
            f"AvatarImage(format={self.format!r}, size={self.width}x{self.height}, "
            f"kind={self.kind!r}, data=<{len(self.data)} bytes>)"
        )

    def __str__(self) -> str:
        """The short repr: ``print(image)`` never dumps the picture."""
        return repr(self)

    def _repr_png_(self) -> bytes | None:
        return self.data if self.format == "png" else None

    def _repr_jpeg_(self) -> bytes | None:
        return self.data if self.format == "jpeg" else None


def provenance_from_text(record: object) -> dict[str, Any]:
    """The provenance dict in an ``avatarkit`` PNG text chunk; empty when it holds none.

    ``record`` is the chunk's value as Pillow gives it (``image.info[PROVENANCE_KEY]``): a
    JSON object's text. Anything else (missing, not JSON, not an object) reads as ``{}``.
    """
    if not isinstance(record, str):
        return {}
    try:
        value = json.loads(record)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def video_format_of(path: str | Path) -> str:
    """The video format an output path names: its suffix, or ``png`` for a folder of frames.

    A name without a suffix, or ending in ``.png`` or ``.frames``, is a PNG sequence.
    """
    suffix = Path(path).suffix.lower().lstrip(".")
    return "png" if suffix in ("", "png", "frames") else suffix


class AvatarVideo(_Model):
    """A rendered talking-avatar clip, kept in a file (videos can be long)."""

    path: Path
    """Where the encoded video lies."""
    format: Literal["mp4", "webm", "gif", "png", "mov"] = "mp4"
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    fps: float = Field(gt=0)
    frame_count: int = Field(ge=0)
    duration: float = Field(ge=0.0)
    has_audio: bool = False
    renderer: str = ""

    @property
    def data(self) -> bytes:
        """The encoded file's bytes."""
        return self.path.read_bytes()

    def _repr_html_(self) -> str:
        """The clip embedded for Jupyter (base64), or a note when its file is gone."""
        try:
            b64 = base64.b64encode(self.data).decode()
        except OSError:
            return f"<pre>{html.escape(repr(self))} (file not found)</pre>"
        if self.format in ("gif", "png"):
            return f'<img src="data:image/{self.format};base64,{b64}" width="{self.width}"/>'
        mime = {"mp4": "video/mp4", "webm": "video/webm", "mov": "video/quicktime"}[self.format]
        return (
            f'<video controls playsinline width="{self.width}" src="data:{mime};base64,{b64}">'
            "</video>"
        )


# --------------------------------------------------------------------------- the turn's result


class StageMetrics(_Model):
    """Where a turn's time went and what it cost."""

    started_at: dt.datetime = Field(default_factory=_now)
    durations: dict[str, float] = Field(default_factory=dict)
    """Seconds per stage (``voice``, ``render``...); streaming turns add ``first_token``,
    ``first_audio`` and ``first_video``: seconds from the turn's start to each."""
    total: float = 0.0
    provider_calls: dict[str, int] = Field(default_factory=dict)
    """Backend calls made by this turn, keyed ``role.method`` (``voice.synthesize``)."""
    fallbacks: dict[str, int] = Field(default_factory=dict)
    """Answers a fallback chain's stand-in gave this turn, by role (``{"voice": 1}``): the
    first backend had failed or was cooling down (:mod:`avatarkit.fallback`)."""
    cache_hits: int = 0
    cache_misses: int = 0


class Response(_Model):
    """Everything one turn produced. Fields of stages that were not run stay ``None``."""

    version: int = RESPONSE_VERSION
    """Layout version; one above :data:`RESPONSE_VERSION` (a newer avatarkit's) is refused."""
    id: str = Field(default_factory=_new_id)
    input: UserInput
    processed: ProcessedText | None = None
    intent: IntentPrediction | None = None
    sentiment: Sentiment | None = None
    dialogue: DialogueResponse | None = None
    voice: VoiceOutput | None = None
    timeline: Timeline | None = None
    image: AvatarImage | None = None
    video: AvatarVideo | None = None
    metrics: StageMetrics = Field(default_factory=StageMetrics)

    @property
    def text(self) -> str:
        """The avatar's spoken reply ("" before the dialogue stage ran)."""
        return self.dialogue.text if self.dialogue else ""

    @field_validator("version")
    @classmethod
    def _known_version(cls, version: int) -> int:
        return _known_version("response", version, RESPONSE_VERSION)

    @classmethod
    def from_json(cls, data: str | bytes) -> Self:
        """Read Response JSON as ``model_dump_json()`` writes it (media inline, as base64).

        (``response.json`` from :meth:`save` is a summary: its media are the files beside it.)

        Raises:
            InputValidationError: not valid Response JSON, or written by a newer avatarkit
                (its ``version`` above :data:`RESPONSE_VERSION`, or its timeline's above
                :data:`TIMELINE_VERSION`).
        """
        return _from_json(cls, data, "response")

    @model_validator(mode="after")
    def _check_timeline(self) -> Response:
        if self.timeline and self.voice and self.timeline.duration == 0.0:
            self.timeline.duration = self.voice.duration
        return self

    def _repr_html_(self) -> str:
        parts = [f"<p><b>{html.escape(self.input.text)}</b></p>"]
        if self.dialogue is not None:
            parts.append(f"<p>{html.escape(self.dialogue.text)}</p>")
        if self.video is not None:
            parts.append(self.video._repr_html_())
        elif self.voice is not None:
            parts.append(self.voice._repr_html_())
        timings = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in self.metrics.durations.items())
        parts.append(f"<small>{html.escape(timings)}</small>")
        return "\n".join(parts)

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write audio, video, image, timeline.json and response.json into ``folder``.

        Every file is written atomically (temporary file, then rename): a failure leaves no
        half-written file. A reply saved there before is replaced: once the new response.json
        is in place, the files the old one listed and this reply does not write (its video,
        say) are removed; files avatarkit did not write stay. Returns the paths written, keyed
        by kind.
        """
        from avatarkit._files import save_response

        return save_response(self, Path(folder))

    @classmethod
    def load(cls, folder: str | Path) -> Response:
        """Read back a reply that :meth:`save` wrote into ``folder``.

        The voice's audio, the avatar's picture and the timeline come from their files (the
        sample rate and duration from the audio itself); the video stays in the folder
        (``video.path``). Render it again, with another avatar or renderer, without a voice
        call: ``renderer.render(image, reply.voice, reply.timeline)``, or on the command line
        ``avatarkit animate --reply FOLDER``.

        Raises:
            InputValidationError: ``folder`` is not a saved reply (no ``response.json``), a
                file it lists is missing or unreadable, or it was written by a newer avatarkit.
        """
        from avatarkit._files import load_response

        return load_response(Path(folder))
