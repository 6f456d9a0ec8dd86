"""The ``avatarkit`` command line (built on Typer): the seed's four steps and a chat loop.

``create`` runs all four (avatar → script → voice → video); ``avatar``, ``script``, ``speak`` and
``animate`` run one each; ``chat`` talks turn by turn; ``batch`` renders many scripts;
``providers`` lists what is usable here; ``serve`` runs the web chat and its widget.
Results are written to files: pictures, audio, video and timeline.json.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from avatarkit._files import probe_writable
from avatarkit._validation import build
from avatarkit.errors import AvatarKitError, InputValidationError, StageError

app = typer.Typer(
    name="avatarkit",
    help="Animated AI avatars: a face that answers in its own voice, lips in sync.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_console = logging.StreamHandler(sys.stderr)
_console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))


@app.callback()
def _options(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Also show the backends' progress notes (models loaded, seeds retried).",
        ),
    ] = False,
) -> None:
    """Animated AI avatars: a face that answers in its own voice, lips in sync."""
    # The library only logs; the command shows its warnings (retries, skipped files...).
    logger = logging.getLogger("avatarkit")
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    if _console not in logger.handlers:
        logger.addHandler(_console)


ChatOpt = Annotated[
    str, typer.Option("--chat", help="Chat model spec, e.g. local, openai:gpt-4o-mini.")
]
VoiceOpt = Annotated[
    str, typer.Option("--voice", help="Voice spec, e.g. espeak:en-us+f3, elevenlabs:<id>.")
]
RendererOpt = Annotated[str, typer.Option("--renderer", help="Renderer spec: local, d-id.")]
ImageOpt = Annotated[str, typer.Option("--image-backend", help="Avatar image generator spec.")]
AvatarOpt = Annotated[
    Path | None, typer.Option("--avatar", help="Use this portrait instead of generating one.")
]
FaceBoxOpt = Annotated[
    str | None,
    typer.Option(
        "--face-box",
        help="Where the face is in --avatar, as LEFT,TOP,WIDTH,HEIGHT in pixels: for a portrait "
        "the face detector misses (an illustration, a stylised face).",
    ),
]
SeedOpt = Annotated[
    int, typer.Option("--seed", min=0, help="Seed for the avatar and its idle motion (0 or more).")
]
OutDir = Annotated[Path, typer.Option("--output", "-o", help="Folder to write results into.")]


def _fail(exc: AvatarKitError) -> NoReturn:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    if isinstance(exc, StageError) and exc.partial is not None:
        typer.secho("(the results of earlier stages were kept; see the output folder)", err=True)
    raise typer.Exit(code=2)


def _error(message: str) -> NoReturn:
    """``error: message`` on stderr and the exit code every refused command uses."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """An OSError while writing ``path`` (read-only, disk full...) as ``cannot write``."""
    try:
        yield
    except OSError as exc:
        _error(f"cannot write {path}: {exc.strerror or exc}")


def _check_writable(folder: Path, target: Path) -> None:
    """Refuse ``target`` before any work when ``folder`` (its folder) cannot be written.

    Nothing is created: a file is made and removed in the nearest folder that exists.
    """
    nearest = folder
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        _error(f"cannot write {target}: {nearest} is a file, not a folder")
    with _writing(target):
        probe_writable(nearest)


def _output_folder(folder: Path) -> Path:
    """Check an output folder (``-o``) up front: not a file, writable."""
    if folder.exists() and not folder.is_dir():
        _error(f"{folder} exists and is not a folder; give a folder for the results")
    _check_writable(folder, folder)
    return folder


def _output_file(path: Path, example: str) -> Path:
    """Check an output file (``-o``) up front: not an existing folder, its folder writable."""
    if path.is_dir():
        _error(f"{path} is a folder; give a file name, e.g. {path / example}")
    _check_writable(path.parent, path)
    return path


def _progress(desc: str) -> Any:
    from tqdm import tqdm

    bar: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, desc=desc, leave=False, file=sys.stderr)
        b = bar["bar"]
        b.update(done - b.n)
        if done >= total:
            b.close()

    return update


def _bot(**kwargs: Any) -> Any:
    from avatarkit.bot import AvatarBot

    return AvatarBot(**kwargs)


def _avatar(path: Path | None, face_box: str | None) -> Any:
    """What ``--avatar`` names, as the bot takes it.

    The path itself; with ``--face-box``, the picture loaded as a photo whose face is there.
    """
    if path is not None and path.is_dir():
        raise InputValidationError(f"--avatar {path} is a folder; give a picture file",
                                   field="avatar")  # fmt: skip
    if face_box is None:
        return path
    if path is None:
        raise InputValidationError("--face-box needs --avatar, the picture it describes",
                                   field="face_box")  # fmt: skip
    try:
        box = tuple(int(part) for part in face_box.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or min(box[:2]) < 0 or min(box[2:]) <= 0:
        raise InputValidationError(
            f"face box {face_box!r}: give LEFT,TOP,WIDTH,HEIGHT, four whole numbers of pixels "
            "(width and height above 0)",
            field="face_box",
        )
    from avatarkit.render.photo import MIN_FACE_BOX
    from avatarkit.types import AvatarImage

    image = AvatarImage.load(path, kind="photo")
    left, top, width, height = box
    if (
        min(width, height) < MIN_FACE_BOX
        or left + width > image.width
        or top + height > image.height
    ):  # said now, not after the voice has been paid for
        raise InputValidationError(
            f"face box {face_box!r} does not fit the {image.width}x{image.height} picture "
            f"{path}: give LEFT,TOP,WIDTH,HEIGHT inside it, at least {MIN_FACE_BOX} pixels wide "
            "and high",
            field="face_box",
        )
    return image.model_copy(update={"face_box": box})


def _run_and_save(run: Callable[[], Any], output: Path) -> Any:
    """Run a turn and save it; when a late stage fails, save what the earlier ones made."""
    try:
        reply = run()
    except StageError as exc:
        if exc.partial is not None:
            try:
                exc.partial.save(output)
            except OSError as error:
                typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
                _error(f"cannot write {output}: {error.strerror or error}")
        raise
    if reply.text:
        typer.echo(f"{reply.text}\n")
    for kind, path in _save(reply, output).items():
        typer.echo(f"{kind:>9}: {path}")
    return reply


def _save(reply: Any, folder: Path) -> dict[str, Path]:
    """``reply.save(folder)``, then discard the video's temporary copy.

    The bot renders without ``output=``, so the clip is a temporary file that belongs to the
    CLI (see ``AvatarBot.respond``): once copied into ``folder`` (or when saving failed) it
    goes, with the ``avatarkit-video-*`` folder the renderer made for it.
    """
    from avatarkit._files import discard_temporary_video

    try:
        with _writing(folder):
            saved: dict[str, Path] = reply.save(folder)
    finally:
        if reply.video is not None:
            discard_temporary_video(reply.video)
    return saved


@app.command()
def create(
    prompt: Annotated[str, typer.Argument(help="What the avatar should talk about.")],
    output: OutDir = Path("out"),
    chat: ChatOpt = "local",
    voice: VoiceOpt = "local",
    renderer: RendererOpt = "local",
    image_backend: ImageOpt = "local",
    avatar: AvatarOpt = None,
    face_box: FaceBoxOpt = None,
    seed: SeedOpt = 0,
) -> None:
    """Make a talking-avatar reply: avatar.png, speech.wav, video.mp4 and timeline.json."""
    _output_folder(output)
    try:
        bot = _bot(
            chat=chat, voice=voice, renderer=renderer, image=image_backend,
            avatar=_avatar(avatar, face_box), seed=seed,
        )  # fmt: skip
        _run_and_save(lambda: bot.respond_sync(prompt, progress=_progress("rendering")), output)
    except AvatarKitError as exc:
        _fail(exc)


def _last_turn(folder: Path) -> int:
    """The highest ``turn-NNN`` number saved in ``folder`` (0 when none)."""
    numbers = [0]
    if folder.is_dir():
        for entry in folder.iterdir():
            prefix, _, number = entry.name.partition("-")
            if prefix == "turn" and number.isdigit() and entry.is_dir():
                numbers.append(int(number))
    return max(numbers)


@app.command()
def chat(
    output: OutDir = Path("out/chat"),
    chat: ChatOpt = "local",
    voice: VoiceOpt = "local",
    renderer: Annotated[
        str, typer.Option("--renderer", help="Renderer spec for --render: local, d-id.")
    ] = "local",
    render: Annotated[bool, typer.Option(help="Render a video for each reply.")] = False,
    session: Annotated[str, typer.Option(help="Conversation id.")] = "cli",
) -> None:
    """Talk with the avatar turn by turn (empty line or Ctrl-D ends); replies are saved per turn."""
    from avatarkit.dialogue.store import check_session_id

    _output_folder(output)
    try:
        check_session_id(session)  # once, here: not as an error after every line typed
        bot = _bot(chat=chat, voice=voice, renderer=renderer if render else None)
    except AvatarKitError as exc:
        _fail(exc)
    turn = _last_turn(output)  # a second session in the same folder continues the numbers
    while True:
        try:
            line = input("you> ")
        except EOFError:
            break
        if not line.strip():
            break
        turn += 1
        try:
            reply = bot.respond_sync(line, session_id=session)
            typer.echo(f"avatar> {reply.text}")
            _save(reply, output / f"turn-{turn:03d}")
        except AvatarKitError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)


_STYLES = ("procedural", "photo")


@app.command()
def avatar(
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write.")] = Path(
        "avatar.png"
    ),
    style: Annotated[
        str | None,
        typer.Option(
            help="procedural (the local backend; the default) or photo (diffusers unless "
            "--backend names another).",
            show_default=False,
        ),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(help="Image generator spec: local, diffusers, automatic1111, openai, test."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model folder, checkpoint or id.")] = None,
    prompt: Annotated[str | None, typer.Option(help="What the avatar looks like.")] = None,
    negative: Annotated[str | None, typer.Option(help="Negative prompt.")] = None,
    preset: Annotated[
        str | None, typer.Option(help="A prompt preset, e.g. fantasy-portrait, studio-portrait.")
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="Your embedding's trigger word: a --preset's {token}.")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed for the picture (0 or more).")] = 0,
    steps: Annotated[int | None, typer.Option(help="Denoising steps (diffusion backends).")] = None,
    size: Annotated[
        int | None, typer.Option(help="Image edge in pixels (64-4096).", min=64, max=4096)
    ] = None,
) -> None:
    """Make the avatar's picture (a procedural face offline, or Stable Diffusion)."""
    from avatarkit import _sync
    from avatarkit.imaging.avatar import make_avatar
    from avatarkit.imaging.provenance import save_image
    from avatarkit.registry import create as create_backend
    from avatarkit.types import AvatarPrompt

    if style is not None and style not in _STYLES:
        _error(f"unknown style {style!r}; styles: {', '.join(_STYLES)}")
    if token is not None and preset is None:
        _error("--token fills in a preset's trigger word: give --preset too (or write the "
               "word into --prompt)")  # fmt: skip
    _output_file(output, "avatar.png")
    if output.suffix.lower() != ".png":
        _error(f"the avatar is saved as PNG (with its parameters); {output} is not a .png")
    spec = backend or ("diffusers" if style == "photo" else "local")
    if model:
        spec = f"{spec.split(':', 1)[0]}:{model}"
    try:
        if preset:
            from avatarkit.imaging.preset import get_preset

            request = get_preset(preset).to_prompt(token, seed=seed)
        else:
            request = AvatarPrompt(
                prompt or "a friendly person, portrait, looking at the camera", seed=seed
            )
        changes: dict[str, Any] = {"prompt": prompt, "negative": negative, "steps": steps}
        if size is not None:
            changes.update(width=size, height=size)
        request = build(
            AvatarPrompt, "avatar",
            **{**request.model_dump(), **{k: v for k, v in changes.items() if v is not None}},
        )  # fmt: skip
        generator = create_backend("image", spec)
        kinds = generator.capabilities.kinds
        if style is not None and style not in kinds:  # e.g. --style photo --backend local
            _error(f"--style {style} and --backend {backend} disagree: {backend} draws "
                   f"{' and '.join(kinds)} avatars only; leave out one of the two")  # fmt: skip
        if "procedural" in kinds:
            request = _for_procedural(request, preset)
        image = _sync.run(make_avatar(generator, request, progress=_progress("generating")))
    except AvatarKitError as exc:
        _fail(exc)
    with _writing(output):
        save_image(image, output)
    typer.echo(f"avatar: {output} ({image.width}x{image.height}, {image.kind}, seed {seed})")


def _for_procedural(request: Any, preset: str | None) -> Any:
    """A preset's request as the procedural generator takes it: its prompt and seed.

    A preset's sampler, steps, guidance and negative prompt are Stable Diffusion settings; the
    procedural face takes the plain words of the prompt (``glasses``, ``curly``...) and the seed.
    """
    from dataclasses import fields

    from avatarkit.render.procedural import FaceParams

    known = {f.name for f in fields(FaceParams)}
    if preset:
        typer.secho(
            f"note: preset {preset!r} is written for Stable Diffusion; the local backend paints "
            "a procedural face from only its prompt's plain words (glasses, curly...) and the "
            "seed. For the picture it describes use --backend diffusers or automatic1111.",
            err=True,
        )
    return request.model_copy(
        update={"style": {k: v for k, v in request.style.items() if k in known}}
    )


@app.command()
def script(
    prompt: Annotated[
        str, typer.Argument(help="What the avatar should say, e.g. 'Introduce yourself'.")
    ],
    chat: ChatOpt = "local",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Text file to write.")
    ] = None,
) -> None:
    """Write the avatar's speech script for a prompt."""
    from avatarkit import _sync
    from avatarkit._files import write_bytes_atomic
    from avatarkit.dialogue.script import write_script
    from avatarkit.registry import create as create_backend

    if output is not None:
        _output_file(output, "script.txt")
    try:
        text = _sync.run(write_script(prompt, create_backend("chat", chat)))
    except AvatarKitError as exc:
        _fail(exc)
    if output is not None:
        with _writing(output):
            write_bytes_atomic(output, text.encode() + b"\n")
        typer.echo(f"script: {output}")
    else:
        typer.echo(text)


@app.command()
def speak(
    text: Annotated[str, typer.Argument(help="Text to speak.")],
    output: OutDir = Path("out/speech"),
    voice: VoiceOpt = "local",
) -> None:
    """Speak text: speech audio plus timeline.json (words, phonemes, visemes)."""
    _output_folder(output)
    try:
        bot = _bot(
            voice=voice, renderer=None, chat=None, preprocessor=None, intent=None, sentiment=None
        )
        _run_and_save(lambda: bot.say_sync(text, render=False), output)
    except AvatarKitError as exc:
        _fail(exc)


@app.command()
def animate(
    text: Annotated[
        str | None, typer.Argument(help="Text for the avatar to say (not with --reply).")
    ] = None,
    output: OutDir = Path("out/animate"),
    voice: Annotated[
        str | None,
        typer.Option(
            "--voice",
            help="Voice spec, e.g. espeak:en-us+f3, elevenlabs:<id> (default: local).",
            show_default=False,
        ),
    ] = None,
    renderer: RendererOpt = "local",
    image_backend: ImageOpt = "local",
    avatar: AvatarOpt = None,
    face_box: FaceBoxOpt = None,
    seed: SeedOpt = 0,
    audio: Annotated[
        Path | None,
        typer.Option(
            "--audio",
            help="Animate this recording instead of synthesising TEXT (which then only sets "
            "the face's expressions); lip sync reads the audio. Not with --voice.",
        ),
    ] = None,
    reply: Annotated[
        Path | None,
        typer.Option(
            "--reply",
            help="Render a saved reply again (a folder that create, speak, animate or chat "
            "wrote): its speech and timeline as they are, no voice call; its avatar unless "
            "--avatar gives another.",
        ),
    ] = None,
) -> None:
    """Speak and animate text as given, or render a saved reply again: avatar, speech, video."""
    if reply is not None:
        given = {"TEXT": text, "--audio": audio, "--voice": voice}
        clash = next((name for name, value in given.items() if value is not None), None)
        if clash is not None:
            _error(f"{clash} and --reply: a saved reply is rendered with the speech it has")
    elif text is None:
        _error("give TEXT to speak, or --reply FOLDER to render a saved reply again")
    elif audio is not None and voice is not None:
        _error("--voice and --audio: the recording is the voice; give one of the two")
    _output_folder(output)
    try:
        if reply is not None:
            _render_again(
                reply, output, renderer=renderer, image=image_backend, avatar=avatar,
                face_box=face_box, seed=seed,
            )  # fmt: skip
            return
        assert text is not None
        bot = _bot(
            voice=f"recorded:{audio}" if audio is not None else "local" if voice is None else voice,
            renderer=renderer,
            image=image_backend,
            avatar=_avatar(avatar, face_box),
            seed=seed,
            chat=None,
            preprocessor=None,
            intent=None,
            sentiment=None,
        )
        _run_and_save(lambda: bot.say_sync(text, progress=_progress("rendering")), output)
    except AvatarKitError as exc:
        _fail(exc)


def _render_again(
    folder: Path, output: Path, *, renderer: str, image: str, avatar: Path | None,
    face_box: str | None, seed: int,
) -> None:  # fmt: skip
    """``animate --reply``: the saved reply's speech and timeline, rendered with this avatar.

    Without ``--avatar`` the reply's own picture is used (a procedural face goes to a renderer
    of photos only as a photo, as ``--avatar`` loads it); a reply saved without one gets the
    image generator's.
    """
    from avatarkit import _sync
    from avatarkit.registry import create as create_backend
    from avatarkit.types import Response

    saved = Response.load(folder)
    voice, timeline = saved.voice, saved.timeline
    if voice is None or timeline is None:
        raise InputValidationError(
            f"{folder} holds no speech and timeline to animate (the turn was saved before "
            "they were made)",
            field="reply",
        )
    drawer = create_backend("renderer", renderer)
    kinds = drawer.capabilities.image_kinds
    picture: Any = saved.image
    if avatar is not None or face_box is not None:
        picture = _avatar(avatar, face_box)
    elif picture is not None and picture.kind not in kinds and "photo" in kinds:
        picture = picture.model_copy(update={"kind": "photo"})
    bot = _bot(
        voice=None, renderer=drawer, image=image, avatar=picture, seed=seed,
        chat=None, preprocessor=None, intent=None, sentiment=None,
    )  # fmt: skip

    def run() -> Any:
        face = bot.avatar_image_sync()
        started = time.perf_counter()
        video = _sync.run(
            bot.renderer.render(face, voice, timeline, progress=_progress("rendering"))
        )
        durations = {**saved.metrics.durations, "render": time.perf_counter() - started}
        metrics = saved.metrics.model_copy(update={"durations": durations})
        return saved.model_copy(update={"image": face, "video": video, "metrics": metrics})

    _run_and_save(run, output)


@app.command()
def batch(
    scripts: Annotated[
        Path, typer.Argument(help="CSV or JSONL file: text[, id, avatar, voice, seed].")
    ],
    output: OutDir = Path("out/batch"),
    voice: VoiceOpt = "local",
    renderer: RendererOpt = "local",
    image_backend: ImageOpt = "local",
    executor: Annotated[str, typer.Option(help="process (default), serial or ray.")] = "process",
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: CPUs).")] = None,
    size: Annotated[
        int | None, typer.Option(help="Frame side in pixels (local renderer, generated faces).")
    ] = None,
) -> None:
    """Render many scripts to clips; rerunning skips finished items, failures are listed."""
    from avatarkit.batch import run_batch

    _output_folder(output)
    try:
        report = run_batch(
            scripts, output, executor=executor, workers=workers,  # type: ignore[arg-type]
            voice=voice, renderer=renderer, image=image_backend, size=size,
            progress=_progress("batch"),
        )  # fmt: skip
    except AvatarKitError as exc:
        _fail(exc)
    typer.echo(
        f"done {len(report.done)}, skipped {len(report.skipped)} (already finished), "
        f"failed {len(report.failed)} in {report.seconds:.1f}s; report: {output}/batch-report.json"
    )
    for item_id, error in report.failed.items():
        typer.secho(f"  {item_id}: {error}", fg=typer.colors.RED, err=True)
    if report.failed:
        raise typer.Exit(code=1)


@app.command()
def providers() -> None:
    """List providers, the roles they fill and whether each is usable here."""
    from avatarkit.registry import default_registry

    rows = default_registry.status()
    typer.echo(f"{'provider':<15}{'usable':<8}{'offline':<9}{'roles':<45}note")
    for row in rows:
        typer.echo(
            f"{row.name:<15}{'yes' if row.usable else 'no':<8}{'yes' if row.offline else '':<9}"
            f"{', '.join(row.roles):<45}{row.reason}"
        )


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Address to bind; the default keeps the chat to this machine.")
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(help="TCP port (0: any free one, shown once listening).", min=0, max=65535),
    ] = 8000,
    chat: ChatOpt = "local",
    voice: VoiceOpt = "local",
    renderer: Annotated[
        str, typer.Option("--renderer", help="Renderer spec: local, d-id, or none (speech only).")
    ] = "local",
    size: Annotated[int, typer.Option(help="Video edge in pixels (local renderer).")] = 320,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where conversations are kept (SQLite).")
    ] = None,
    embed_origin: Annotated[
        list[str] | None,
        typer.Option(
            help="A site allowed to embed the widget, e.g. https://example.com "
            "(repeatable; '*' for any)."
        ),
    ] = None,
    title: Annotated[
        str | None, typer.Option(help="Name shown in the chat's header (default: the persona's).")
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            help="A host name browsers may reach the server by, e.g. chat.example.com behind a "
            "proxy (repeatable; default: the loopback names and the bound address)."
        ),
    ] = None,
) -> None:
    """Serve the chat page and the embeddable widget (needs the serve extra)."""
    sockets: list[Any] = []
    try:
        from avatarkit.server import (
            ServerOptions,
            bind_sockets,
            check_data_dir,
            create_app,
            default_bot_factory,
            default_data_dir,
            is_loopback,
        )
        from avatarkit.server import serve as run_server

        fields: dict[str, Any] = {"title": title}
        if embed_origin:
            fields["embed_origins"] = tuple(embed_origin)
        if allowed_host:
            fields["allowed_hosts"] = tuple(allowed_host)
        options = _server_options(ServerOptions, fields)
        folder = check_data_dir(data_dir or default_data_dir())  # a file, read-only: now
        # in use: said now, not after the warm-up; and held, so no one can take it meanwhile
        sockets = bind_sockets(host, port)
        make = default_bot_factory(
            chat=chat, voice=voice, renderer=None if renderer == "none" else renderer,
            size=size, data_dir=folder,
        )  # fmt: skip
        bot = make()  # fail here, with a clear message, on a bad spec or a missing key
    except AvatarKitError as exc:
        for sock in sockets:
            sock.close()
        _fail(exc)
    if not is_loopback(host):
        typer.secho(
            f"WARNING: listening on {host}, not just this machine: anyone who can reach it can "
            "chat and spend your backends' quota. Put HTTPS and a login in front of it.",
            fg=typer.colors.RED, bold=True, err=True,
        )  # fmt: skip
    shown = f"[{host}]" if ":" in host else host
    port = sockets[0].getsockname()[1]  # the one it got, for port 0

    def ready() -> None:  # once the port is listening, not before
        typer.echo(f"avatarkit chat: http://{shown}:{port}/  (conversations in {folder})")
        typer.echo(f'embed it: <script src="http://{shown}:{port}/widget.js" async></script>')

    run_server(create_app(lambda: bot, data_dir=folder, options=options),
               host=host, sockets=sockets, options=options, on_ready=ready)  # fmt: skip


_SERVE_OPTIONS = {
    "embed_origins": "--embed-origin",
    "title": "--title",
    "allowed_hosts": "--allowed-host",
}


def _server_options(model: Any, fields: dict[str, Any]) -> Any:
    """``ServerOptions(**fields)``; a refused value is ``error: --option: why``."""
    from pydantic import ValidationError

    try:
        return model(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        why = str(first["msg"]).removeprefix("Value error, ")
        problem = f"{_SERVE_OPTIONS.get(name, name or 'option')}: {why}"
    _error(problem)


def main(prog_name: str | None = None) -> None:
    """Entry point of the ``avatarkit`` command."""
    # A stop asked by kill, timeout or a service manager (SIGTERM) ends a command as Ctrl-C
    # does: the render is cancelled and its partial and temporary files are removed, where
    # the signal's default action would end the process on the spot and leave them behind.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    app(prog_name=prog_name)


if __name__ == "__main__":  # pragma: no cover
    main()
