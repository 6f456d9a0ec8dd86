"""A saved avatar picture loads back as what it was (a procedural face is redrawn)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from avatarkit.cli import app
from avatarkit.errors import InputValidationError
from avatarkit.render.photo import PhotoRig
from avatarkit.render.procedural import generate_procedural, params_from_image
from avatarkit.types import PROVENANCE_KEY, AvatarImage

DATA = Path(__file__).parent / "data"
runner = CliRunner()


def test_a_saved_procedural_avatar_loads_back_as_procedural(tmp_path: Path) -> None:
    image = generate_procedural(7, size=256)
    path = tmp_path / "face.png"
    path.write_bytes(image.data)  # what Response.save and the CLI write

    loaded = AvatarImage.load(path)

    assert loaded.kind == "procedural"
    assert (loaded.width, loaded.height, loaded.format) == (256, 256, "png")
    assert params_from_image(loaded) == params_from_image(image)
    assert loaded.face_box == image.face_box
    assert loaded.provenance["source"] == str(path)


def test_a_procedural_avatar_can_be_loaded_as_a_photo_and_needs_no_face_detection(
    tmp_path: Path,
) -> None:
    image = generate_procedural(7, size=256)  # a face OpenCV's cascades do not find
    path = tmp_path / "face.png"
    path.write_bytes(image.data)

    photo = AvatarImage.load(path, kind="photo")

    assert photo.kind == "photo" and photo.face_box == image.face_box
    # OpenCV's cascades find no face in a flat illustration; the recorded box stands in
    PhotoRig(photo, size=256)


def test_a_portrait_without_a_record_loads_as_a_photo(tmp_path: Path) -> None:
    path = tmp_path / "portrait.jpg"
    path.write_bytes((DATA / "portrait.jpg").read_bytes())

    loaded = AvatarImage.load(path)

    assert (loaded.kind, loaded.format, loaded.width, loaded.height) == ("photo", "jpeg", 320, 300)
    assert loaded.face_box is None
    assert loaded.provenance == {"source": str(path)}


def test_an_unreadable_record_is_ignored(tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text(PROVENANCE_KEY, "{not json")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buf, format="PNG", pnginfo=info)
    path = tmp_path / "odd.png"
    path.write_bytes(buf.getvalue())

    assert AvatarImage.load(path).kind == "photo"


def test_a_record_that_cannot_be_redrawn_loads_as_a_photo(tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text(PROVENANCE_KEY, json.dumps({"generator": "procedural"}))  # no params, no seed
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buf, format="PNG", pnginfo=info)
    path = tmp_path / "half.png"
    path.write_bytes(buf.getvalue())

    assert AvatarImage.load(path).kind == "photo"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.png", None, "does not exist"),
        ("notes.png", b"just some text", "not a readable image"),
        ("cut.png", "truncated", "not a readable image"),
        ("anim.gif", "gif", "PNG, JPEG or WebP"),
    ],
)
def test_bad_files_are_refused_with_a_typed_error(
    tmp_path: Path, name: str, content: bytes | str | None, message: str
) -> None:
    path = tmp_path / name
    if content == "gif":
        Image.new("RGB", (8, 8)).save(path, format="GIF")
    elif content == "truncated":
        path.write_bytes(generate_procedural(1, size=64).data[:20])  # a PNG header, then nothing
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(InputValidationError, match=message) as info:
        AvatarImage.load(path)
    assert "BytesIO" not in str(info.value)


def test_the_avatar_command_makes_a_face_that_animate_can_use(tmp_path: Path) -> None:
    face = tmp_path / "face.png"
    made = runner.invoke(app, ["avatar", "--seed", "7", "--size", "256", "-o", str(face)])
    assert made.exit_code == 0, made.output

    out = tmp_path / "clip"
    result = runner.invoke(app, ["animate", "Hello.", "--avatar", str(face), "-o", str(out)])

    assert result.exit_code == 0, result.output
    assert (out / "video.mp4").stat().st_size > 0
    assert AvatarImage.load(out / "avatar.png").kind == "procedural"


def test_the_avatar_command_refuses_a_name_that_is_not_png_before_generating(
    tmp_path: Path,
) -> None:
    out = tmp_path / "face.jpg"  # the picture and its record are written as PNG
    result = runner.invoke(app, ["avatar", "--seed", "7", "-o", str(out)])
    assert result.exit_code == 2
    assert "not a .png" in result.output
    assert not out.exists()


def test_asking_for_procedural_without_a_record_or_for_an_unknown_kind_is_refused() -> None:
    portrait = DATA / "portrait.jpg"
    with pytest.raises(InputValidationError, match="cannot be redrawn") as info:
        AvatarImage.load(portrait, kind="procedural")
    assert info.value.field == "kind"
    with pytest.raises(InputValidationError, match="kind must be"):
        AvatarImage.load(portrait, kind="cartoon")  # type: ignore[arg-type]


def test_a_face_box_on_the_command_line_animates_a_face_the_cascades_miss(
    tmp_path: Path,
) -> None:
    face = tmp_path / "face.png"  # no record (re-saved): a photo whose face the cascades miss
    Image.open(io.BytesIO(generate_procedural(7, size=256).data)).save(face)
    missed = runner.invoke(
        app, ["animate", "Hi.", "--avatar", str(face), "-o", str(tmp_path / "a")]
    )
    assert missed.exit_code == 2 and "No face found" in missed.output

    box = ",".join(str(v) for v in generate_procedural(7, size=256).face_box)  # type: ignore[union-attr]
    out = tmp_path / "b"
    result = runner.invoke(
        app, ["animate", "Hi.", "--avatar", str(face), "--face-box", box, "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert (out / "video.mp4").stat().st_size > 0


@pytest.mark.parametrize("box", ["1,2,3", "a,b,c,d", "0,0,0,10", "-1,0,10,10"])
def test_a_bad_face_box_is_refused_before_any_work(tmp_path: Path, box: str) -> None:
    face = tmp_path / "face.png"
    face.write_bytes(generate_procedural(5, size=64).data)
    result = runner.invoke(
        app, ["animate", "Hi.", "--avatar", str(face), "--face-box", box, "-o", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "face box" in result.output
    assert not (tmp_path / "speech.wav").exists()


def test_a_face_box_needs_an_avatar(tmp_path: Path) -> None:
    result = runner.invoke(app, ["animate", "Hi.", "--face-box", "1,2,3,4", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "--avatar" in result.output


def test_a_saved_procedural_face_goes_to_a_photo_only_renderer_as_a_photo(tmp_path: Path) -> None:
    from avatarkit import AvatarBot
    from avatarkit.ports import RendererCapabilities
    from avatarkit.testing import FakeRenderer

    class PhotoOnly(FakeRenderer):  # like D-ID: animates photos only
        @property
        def capabilities(self) -> RendererCapabilities:
            return RendererCapabilities(image_kinds=("photo",), formats=("gif",), offline=True)

    face = tmp_path / "face.png"
    face.write_bytes(generate_procedural(7, size=128).data)
    assert AvatarBot(renderer=PhotoOnly(), avatar=face).avatar_image_sync().kind == "photo"
    assert AvatarBot(renderer="local", avatar=face).avatar_image_sync().kind == "procedural"


def test_bytes_that_are_no_picture_get_a_message_without_a_buffer_repr() -> None:
    from avatarkit.imaging.portrait import check_portrait
    from avatarkit.imaging.provenance import read_provenance

    for read in (read_provenance, check_portrait):
        with pytest.raises(InputValidationError, match="not a readable image") as info:
            read(b"<html>502 Bad Gateway</html>")
        assert "BytesIO" not in str(info.value)


def test_provenance_reads_the_same_record_that_loading_restores(tmp_path: Path) -> None:
    from avatarkit.imaging.provenance import read_provenance
    from avatarkit.types import provenance_from_text

    image = generate_procedural(7, size=64)
    record = read_provenance(image.data)
    assert record is not None and record["seed"] == 7
    assert AvatarImage.load(_write(tmp_path / "f.png", image.data)).provenance.items() >= (
        record.items()
    )
    assert provenance_from_text("not json") == {} and provenance_from_text("[1]") == {}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_folder_given_as_the_avatar_says_it_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(InputValidationError, match="is a folder"):
        AvatarImage.load(tmp_path)


def test_a_generated_pictures_face_box_survives_saving_and_loading(tmp_path: Path) -> None:
    # a Stable Diffusion picture, cropped to its face: the box is in no PNG chunk of its own
    from avatarkit._image import encode_png
    from avatarkit.imaging.provenance import save_image

    picture = AvatarImage(
        data=encode_png(np.zeros((64, 64, 3), np.uint8)), format="png", width=64, height=64,
        face_box=(8, 10, 40, 44), provenance={"prompt": "a portrait", "seed": 3},
    )  # fmt: skip
    save_image(picture, tmp_path / "avatar.png")
    loaded = AvatarImage.load(tmp_path / "avatar.png")
    assert loaded.face_box == (8, 10, 40, 44)
    assert loaded.provenance["prompt"] == "a portrait"


def test_a_cropped_pictures_face_box_replaces_the_one_its_chunk_holds(tmp_path: Path) -> None:
    # as the diffusers generator makes them: a provenance chunk written before the crop
    from avatarkit.imaging.portrait import portrait_crop
    from avatarkit.imaging.provenance import png_with_provenance, read_parameters, save_image

    generated = Image.fromarray(np.full((128, 128, 3), 200, np.uint8))
    data = png_with_provenance(generated, {"prompt": "a portrait", "parameters": "a portrait"})
    picture = AvatarImage(data=data, format="png", width=128, height=128, face_box=(40, 30, 48, 60),
                          provenance={"prompt": "a portrait"})  # fmt: skip
    crop = portrait_crop(picture, size=64)
    save_image(crop, tmp_path / "avatar.png")
    loaded = AvatarImage.load(tmp_path / "avatar.png")
    assert loaded.face_box == crop.face_box is not None
    assert (read_parameters(tmp_path / "avatar.png") or "").startswith("a portrait")
    # a picture whose own chunk holds another box (the generator's, before its crop)
    stale = png_with_provenance(
        generated, {"prompt": "p", "parameters": "p", "face_box": [0, 0, 9, 9]}
    )
    chunked = AvatarImage(data=stale, format="png", width=128, height=128,
                          face_box=(40, 30, 48, 60), provenance={"prompt": "p"})  # fmt: skip
    save_image(chunked, tmp_path / "chunked.png")
    assert AvatarImage.load(tmp_path / "chunked.png").face_box == (40, 30, 48, 60)
    assert read_parameters(tmp_path / "chunked.png") == "p"
    # and a procedural avatar cropped: the uncropped box in its provenance does not come back
    face = generate_procedural(3, size=256)
    small = portrait_crop(face, size=128)
    save_image(small, tmp_path / "small.png")
    assert AvatarImage.load(tmp_path / "small.png", kind="photo").face_box == small.face_box
