from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from avatarkit.batch import BatchItem, read_items, run_batch
from avatarkit.errors import InputValidationError

SPECS = {"voice": "test", "renderer": "test", "image": "test"}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_read_items_from_csv_and_jsonl(tmp_path: Path) -> None:
    csv_file = tmp_path / "s.csv"
    csv_file.write_text("id,text,seed\nhello,Hello there,3\n,Second one,\n")
    items = read_items(csv_file)
    assert items[0].id == "hello" and items[0].seed == 3
    assert items[1].id.startswith("00002-")
    jl = write_jsonl(tmp_path / "s.jsonl", [{"text": "a"}, {"text": "b", "voice": "test"}])
    assert [i.voice for i in read_items(jl)] == [None, "test"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"id": "x"}\n', "item 1"),
        ('{"id": "a", "text": "1"}\n{"id": "a", "text": "2"}\n', "duplicate ids"),
        ('{"id": "../etc", "text": "1"}\n', "item 1"),
        ("not json\n", "cannot read"),
    ],
)
def test_bad_batch_files_are_refused(tmp_path: Path, content: str, match: str) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text(content)
    with pytest.raises(InputValidationError, match=match):
        read_items(f)


def test_batch_renders_collects_failures_and_resumes(tmp_path: Path) -> None:
    items = [BatchItem(id=f"item{i}", text=f"Script number {i}.") for i in range(4)]
    items.append(BatchItem(id="broken", text="This one cannot be saved."))
    out = tmp_path / "out"
    out.mkdir()
    (out / "broken").write_text("a file where the item's folder goes")  # fails as it is saved
    seen: list[tuple[int, int]] = []
    report = run_batch(
        items, out, executor="serial", progress=lambda d, t: seen.append((d, t)), **SPECS
    )
    assert sorted(report.done) == [f"item{i}" for i in range(4)]
    assert "broken" in report.failed["broken"]
    assert seen[-1] == (5, 5)
    for i in range(4):
        assert {p.name for p in (out / f"item{i}").iterdir()} >= {
            "speech.wav",
            "video.gif",
            "response.json",
        }
    saved = json.loads((out / "batch-report.json").read_text())
    assert saved["failed"].keys() == {"broken"}

    # A rerun (as after a crash) redoes only what did not finish.
    (out / "item2" / "response.json").unlink()
    again = run_batch(items, out, executor="serial", **SPECS)
    assert again.done == ["item2"]
    assert sorted(again.skipped) == ["item0", "item1", "item3"]


def test_process_pool_gives_the_same_results(tmp_path: Path) -> None:
    items = [BatchItem(id=f"p{i}", text=f"Pool item {i}.") for i in range(4)]
    report = run_batch(items, tmp_path, executor="process", workers=2, **SPECS)
    assert sorted(report.done) == ["p0", "p1", "p2", "p3"] and not report.failed


def test_bad_options_are_refused_before_any_file_is_written(tmp_path: Path) -> None:
    from avatarkit.errors import ConfigurationError

    items = [BatchItem(id="a", text="Hello.")]
    with pytest.raises(ConfigurationError, match="unknown executor"):
        run_batch(items, tmp_path / "x", executor="threads", **SPECS)  # type: ignore[arg-type]
    with pytest.raises(InputValidationError, match="size"):
        run_batch(items, tmp_path / "y", size=10, **SPECS)
    with pytest.raises(InputValidationError, match="unique"):
        run_batch([*items, BatchItem(id="a", text="Again.")], tmp_path / "z", **SPECS)
    assert not any(tmp_path.iterdir())


def test_the_same_batch_runs_on_a_local_ray_instance(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")  # about 6 s (Ray's start-up) on a 2-core machine
    items = [BatchItem(id=f"r{i}", text=f"Ray item {i}.") for i in range(3)]
    items.append(BatchItem(id="bad", text="Saved where a file is."))  # fails in its worker
    (tmp_path / "bad").write_text("a file where the item's folder goes")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        report = run_batch(items, tmp_path, executor="ray", **SPECS)
        assert sorted(report.done) == ["r0", "r1", "r2"]
        assert "bad" in report.failed["bad"]
        assert (tmp_path / "r1" / "video.gif").stat().st_size > 0
        again = run_batch(items, tmp_path, executor="ray", **SPECS)
        assert sorted(again.skipped) == ["r0", "r1", "r2"] and not again.done
    finally:
        ray.shutdown()


# --------------------------------------------------------------------------- ids


@pytest.mark.parametrize("bad_id", ["..", ".", "..."])
def test_ids_made_only_of_dots_are_refused_before_anything_is_written(
    tmp_path: Path, bad_id: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    f = write_jsonl(work / "s.jsonl", [{"id": bad_id, "text": "Hello"}])
    with pytest.raises(InputValidationError, match=r"item 1.*only of dots"):
        read_items(f)
    with pytest.raises(InputValidationError, match="only of dots"):
        run_batch(f, work / "out", executor="serial", **SPECS)
    assert [p.name for p in work.iterdir()] == ["s.jsonl"]
    with pytest.raises(ValueError, match="only of dots"):
        BatchItem(id=bad_id, text="Hello")


def test_an_id_changed_after_validation_is_checked_again(tmp_path: Path) -> None:
    item = BatchItem(id="fine", text="Hello")
    item.id = ".."
    with pytest.raises(InputValidationError, match="only of dots"):
        run_batch([item], tmp_path / "out", executor="serial", **SPECS)
    assert not any(tmp_path.iterdir())


def test_ids_with_dots_and_letters_are_fine(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "s.jsonl", [{"id": "v1.2", "text": "a"}, {"id": ".x", "text": "b"}])
    assert [i.id for i in read_items(f)] == ["v1.2", ".x"]


# --------------------------------------------------------------------------- input errors


def test_a_csv_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    f = tmp_path / "excel.csv"
    f.write_bytes("id,text\nhi,Hello there\n".encode("utf-8-sig"))
    assert [(i.id, i.text) for i in read_items(f)] == [("hi", "Hello there")]
    jl = tmp_path / "bom.jsonl"
    jl.write_bytes('{"id": "a", "text": "Hello"}\n'.encode("utf-8-sig"))
    assert [i.id for i in read_items(jl)] == ["a"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        # a renamed or missing text column: say which columns there are
        ("ID,Text\na,Hello\n", r"no 'text' column; the header has 'ID', 'Text'"),
        ("id;text\na;Hello\n", r"no 'text' column; the header has 'id;text'.*commas"),
        # an unknown column
        ("id,text,speaker\na,Hello,Ann\n", r"unknown column 'speaker'"),
        # one row with a value too many
        ("id,text\na,Hello,extra\n", r"line 2 \(item 1\): the row has more values than the header"),
        # an empty text on the third line
        ("id,text\na,Hello\nb,\n", r"line 3 \(item 2\): text: Field required"),
        ("id,text,seed\na,Hello,many\n", r"line 2 \(item 1\): seed: "),
        ("", "no header row"),
    ],
)
def test_bad_csv_files_say_what_is_wrong(tmp_path: Path, content: str, match: str) -> None:
    f = tmp_path / "s.csv"
    f.write_text(content)
    with pytest.raises(InputValidationError, match=match):
        read_items(f)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"text": "a"}\nnot json\n', r"line 2"),
        ('{"text": "a"}\n\n{"id": "b"}\n', r"line 3 \(item 2\): text: Field required"),
        ('{"text": "a"}\n["b"]\n', r"line 2: .*JSON object"),
        ('{"text": "a", "speaker": "Ann"}\n', r"line 1 \(item 1\): unknown key 'speaker'"),
    ],
)
def test_bad_jsonl_lines_are_reported_by_their_line_number(
    tmp_path: Path, content: str, match: str
) -> None:
    f = tmp_path / "s.jsonl"
    f.write_text(content)
    with pytest.raises(InputValidationError, match=match):
        read_items(f)


def test_a_file_that_is_not_utf8_says_so(tmp_path: Path) -> None:
    f = tmp_path / "s.csv"
    f.write_bytes("id,text\na,Caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputValidationError, match="not UTF-8"):
        read_items(f)


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("size", [63, 2049, 3000])
def test_sizes_the_renderer_cannot_draw_are_refused(tmp_path: Path, size: int) -> None:
    items = [BatchItem(id="a", text="Hello.")]
    with pytest.raises(InputValidationError, match="64–2048"):
        run_batch(items, tmp_path / "out", executor="serial", size=size, **SPECS)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("option", "value", "error", "match"),
    [
        ("voice", "nonsense", "UnknownProviderError", "Unknown provider 'nonsense'"),
        ("renderer", "nonsense", "UnknownProviderError", "Unknown provider 'nonsense'"),
        ("image", "nonsense", "UnknownProviderError", "Unknown provider 'nonsense'"),
        ("renderer", "espeak", "ConfigurationError", "has no 'renderer' backend"),
        ("renderer", "d-id", "MissingKeyError", "DID_API_KEY"),
    ],
)
def test_bad_provider_specs_are_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str, value: str, error: str, match: str
) -> None:
    import avatarkit.errors

    monkeypatch.delenv("DID_API_KEY", raising=False)
    items = [BatchItem(id="a", text="Hello."), BatchItem(id="b", text="Again.")]
    specs = {**SPECS, option: value}
    with pytest.raises(getattr(avatarkit.errors, error), match=match):
        run_batch(items, tmp_path / "out", executor="process", workers=1, **specs)
    assert not any(tmp_path.iterdir())


def test_the_image_backend_is_not_needed_when_every_item_has_a_portrait(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 150, 120)).save(tmp_path / "face.png")
    items = [BatchItem(id="a", text="Hello.", avatar=str(tmp_path / "face.png"))]
    specs = {**SPECS, "image": "nonsense"}
    report = run_batch(items, tmp_path / "out", executor="serial", **specs)
    assert report.done == ["a"] and not report.failed


# --------------------------------------------------------------------------- unrenderable items


def test_rows_with_nothing_to_speak_or_too_much_are_refused_before_any_work(
    tmp_path: Path, paid_voice: object
) -> None:
    rows = [
        {"id": "ok", "text": "Hello there.", "voice": "paid"},
        {"id": "emoji", "text": "😀😀"},
        {"id": "tags", "text": "[happy] *smiles*"},
        {"id": "long", "text": "word " * 2000},
    ]
    f = write_jsonl(tmp_path / "s.jsonl", rows)
    with pytest.raises(InputValidationError) as caught:
        run_batch(f, tmp_path / "out", executor="serial", **SPECS)
    message = str(caught.value)
    assert "line 2 (item 2)" in message and "line 3 (item 3)" in message
    assert "nothing to speak" in message
    assert "line 4 (item 4): text:" in message and "max_input_chars" in message
    assert paid_voice.calls == []  # type: ignore[attr-defined]
    assert not (tmp_path / "out").exists()


def test_an_item_that_fails_is_not_marked_done_and_is_tried_again(tmp_path: Path) -> None:
    items = [BatchItem(id="blocked", text="Hi there."), BatchItem(id="ok", text="Hello there.")]
    (tmp_path / "blocked").write_text("a file where the item's folder goes")
    report = run_batch(items, tmp_path, executor="serial", **SPECS)
    assert report.done == ["ok"] and list(report.failed) == ["blocked"]
    # a rerun tries it again instead of skipping it
    (tmp_path / "blocked").unlink()
    again = run_batch(items, tmp_path, executor="serial", **SPECS)
    assert again.skipped == ["ok"] and again.done == ["blocked"]
    assert (tmp_path / "blocked" / "response.json").is_file()


def test_a_failing_say_leaves_no_response_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from avatarkit.bot import AvatarBot

    def refuse(self: AvatarBot, text: str, **kwargs: object) -> None:
        raise InputValidationError("the text has nothing to speak", field="text")

    monkeypatch.setattr(AvatarBot, "say_sync", refuse)
    report = run_batch([BatchItem(id="x", text="Hi.")], tmp_path, executor="serial", **SPECS)
    assert "nothing to speak" in report.failed["x"] and not report.done
    assert not (tmp_path / "x").exists()


def test_a_negative_seed_is_refused_with_the_row(tmp_path: Path) -> None:
    f = tmp_path / "s.csv"
    f.write_text("id,text,seed\na,Hello,-1\n")
    with pytest.raises(InputValidationError, match=r"line 2 \(item 1\): seed: .*greater than"):
        read_items(f)
    with pytest.raises(ValueError, match="seed"):
        BatchItem(text="Hello", seed=-3)


# --------------------------------------------------------------------------- temporary files


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private tempfile.gettempdir() for the renderers of a serial batch."""
    import tempfile

    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_no_temporary_video_is_left_behind(tmp_path: Path, temp_dir: Path) -> None:
    items = [BatchItem(id=f"t{i}", text=f"Clip {i}.") for i in range(2)]
    report = run_batch(items, tmp_path / "out", executor="serial", **SPECS)
    assert sorted(report.done) == ["t0", "t1"]
    assert (tmp_path / "out" / "t0" / "video.gif").stat().st_size > 0
    assert list(temp_dir.iterdir()) == []


def test_the_local_renderers_temporary_folder_is_removed(tmp_path: Path, temp_dir: Path) -> None:
    items = [BatchItem(id="local", text="Hi.")]
    specs = {**SPECS, "renderer": "local", "image": "local"}
    report = run_batch(items, tmp_path / "out", executor="serial", size=64, **specs)
    assert report.done == ["local"], report.failed
    assert (tmp_path / "out" / "local" / "video.mp4").stat().st_size > 0
    assert list(temp_dir.iterdir()) == []


def test_a_failed_save_leaves_no_temporary_or_half_written_file(
    tmp_path: Path, temp_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import avatarkit._files

    real_write_atomic = avatarkit._files.write_atomic

    def full_disk(path: Path, writer: object) -> Path:
        if path.name.startswith("video.") and path.parent.name == "x":  # the saved copy

            def fail(fh: object) -> None:
                raise OSError(28, "No space left on device")

            return real_write_atomic(path, fail)
        return real_write_atomic(path, writer)  # type: ignore[arg-type]

    monkeypatch.setattr(avatarkit._files, "write_atomic", full_disk)
    items = [BatchItem(id="x", text="Hello.")]
    report = run_batch(items, tmp_path / "out", executor="serial", **SPECS)
    assert "No space left" in report.failed["x"] and not report.done
    left = sorted(p.name for p in (tmp_path / "out" / "x").iterdir())
    assert "response.json" not in left and not [n for n in left if n.endswith(".part")]
    assert list(temp_dir.iterdir()) == []


# --------------------------------------------------------------------------- portrait paths


def test_a_relative_avatar_path_is_read_from_the_batch_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    batch = tmp_path / "batch"
    (batch / "faces").mkdir(parents=True)
    Image.new("RGB", (64, 64), (200, 150, 120)).save(batch / "faces" / "ann.png")
    f = batch / "s.csv"
    f.write_text(f"id,text,avatar\nrel,Hello,faces/ann.png\nabs,Hi,{batch / 'faces' / 'ann.png'}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    items = read_items("../batch/s.csv")
    face = (batch / "faces" / "ann.png").resolve()
    assert [Path(i.avatar or "") for i in items] == [face, face]
    report = run_batch(f, tmp_path / "out", executor="serial", **SPECS)
    assert sorted(report.done) == ["abs", "rel"], report.failed


def test_a_missing_avatar_file_is_refused_with_its_row(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "s.jsonl", [{"text": "a"}, {"text": "b", "avatar": "ann.png"}])
    with pytest.raises(
        InputValidationError, match=r"line 2 \(item 2\): avatar: .*ann.png does not exist"
    ):
        read_items(f)


# --------------------------------------------------------------------------- rows checked up front


@pytest.fixture
def paid_voice() -> object:
    """A voice provider ``paid`` that counts what it is asked to say (serial batches only)."""
    from avatarkit.registry import Provider, default_registry
    from avatarkit.testing import FakeVoice

    voice = FakeVoice()
    default_registry.register(Provider("paid", voice=lambda name=None, **kw: voice))
    yield voice
    default_registry.unregister("paid")


def test_a_misspelt_row_voice_refuses_the_file_before_any_row_is_paid_for(
    tmp_path: Path, paid_voice: object
) -> None:
    rows = [{"id": f"r{i}", "text": f"Row {i}.", "voice": "paid"} for i in range(5)]
    rows.append({"id": "last", "text": "The last row.", "voice": "piad"})
    f = write_jsonl(tmp_path / "s.jsonl", rows)
    with pytest.raises(
        InputValidationError, match=r"s.jsonl line 6 \(item 6\): voice: Unknown provider 'piad'"
    ) as caught:
        run_batch(f, tmp_path / "out", executor="serial", **SPECS)
    assert caught.value.field == "voice"
    assert paid_voice.calls == []  # type: ignore[attr-defined]
    assert not (tmp_path / "out").exists()


def test_a_bad_voice_in_an_item_given_in_python_is_refused_up_front(tmp_path: Path) -> None:
    items = [BatchItem(id="a", text="Hello."), BatchItem(id="b", text="Hi.", voice="nope")]
    with pytest.raises(InputValidationError, match=r"item 'b': voice: Unknown provider 'nope'"):
        run_batch(items, tmp_path / "out", executor="serial", **SPECS)
    assert not any(tmp_path.iterdir())


def test_a_row_voice_without_its_api_key_is_refused_with_the_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    f = tmp_path / "s.csv"
    f.write_text("id,text,voice\na,Hello,\nb,Hi,elevenlabs:21m00Tcm4TlvDq8ikWAM\n")
    with pytest.raises(
        InputValidationError, match=r"line 3 \(item 2\): voice: .*ELEVENLABS_API_KEY"
    ):
        run_batch(f, tmp_path / "out", executor="serial", **SPECS)
    assert not (tmp_path / "out").exists()


def test_every_bad_row_is_listed_with_its_line_and_reason(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 150, 120)).save(tmp_path / "face.png")
    (tmp_path / "notes.png").write_text("not a picture")
    f = tmp_path / "s.csv"
    f.write_text(
        "id,text,voice,avatar\n"
        "ok,Fine,test,face.png\n"
        "notext,,test,\n"  # line 3
        "voice,Hi,nope,\n"  # line 4
        "face,Hi,,gone.png\n"  # line 5
        "picture,Hi,,notes.png\n"  # line 6
        "take,Hi,recorded:takes/gone.wav,\n"  # line 7
    )
    with pytest.raises(InputValidationError) as caught:
        run_batch(f, tmp_path / "out", executor="serial", **SPECS)
    message = str(caught.value)
    assert message.startswith(f"{f}: 5 rows cannot be rendered")
    for expected in (
        r"line 3 \(item 2\): text: Field required",
        r"line 4 \(item 3\): voice: Unknown provider 'nope'",
        r"line 5 \(item 4\): avatar: .*gone.png does not exist",
        r"line 6 \(item 5\): avatar: .*notes.png is not a readable image",
        r"line 7 \(item 6\): voice: .*takes/gone.wav does not exist",
    ):
        assert re.search(expected, message), (expected, message)
    assert "line 2 " not in message
    assert not (tmp_path / "out").exists()
    # read_items checks what needs no backend: fields and that the files exist
    with pytest.raises(InputValidationError) as read:
        read_items(f)
    assert "3 rows cannot be rendered" in str(read.value)
    assert "line 4" not in str(read.value) and "line 6" not in str(read.value)


def test_many_rows_with_the_same_problem_are_listed_once(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "s.jsonl", [{"text": "Hi", "voice": "nope"} for _ in range(40)])
    with pytest.raises(InputValidationError) as caught:
        run_batch(f, tmp_path / "out", executor="serial", **SPECS)
    message = str(caught.value)
    assert message.count("Unknown provider") == 1
    assert "40 rows cannot be rendered" in message and "line 1 (item 1)" in message
    assert "and 37 more" in message and len(message) < 1000


# --------------------------------------------------------------------------- recordings


def _recording(path: Path) -> Path:
    import numpy as np
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(8000) / 16_000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32), 16_000)
    return path


def test_a_relative_recording_is_read_from_the_batch_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = tmp_path / "batch"
    take = _recording(batch / "takes" / "ann.wav").resolve()
    f = batch / "s.csv"
    f.write_text(f"id,text,voice\nrel,Hello,recorded:takes/ann.wav\nabs,Hi,recorded:{take}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert [i.voice for i in read_items("../batch/s.csv")] == [f"recorded:{take}"] * 2
    report = run_batch("../batch/s.csv", tmp_path / "out", executor="serial", **SPECS)
    assert sorted(report.done) == ["abs", "rel"], report.failed
    saved = json.loads((tmp_path / "out" / "rel" / "response.json").read_text())
    assert saved["voice"]["voice"] == "recorded:ann.wav"


def test_paths_of_items_given_in_python_are_read_from_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    _recording(tmp_path / "takes" / "ann.wav")
    Image.new("RGB", (64, 64), (200, 150, 120)).save(tmp_path / "face.png")
    items = [BatchItem(id="a", text="Hello.", voice="recorded:takes/ann.wav", avatar="face.png")]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(InputValidationError) as caught:
        run_batch(items, tmp_path / "out", executor="serial", **SPECS)
    assert re.search(r"item 'a': voice: .*does not exist.*current folder", str(caught.value))
    assert re.search(r"item 'a': avatar: .*does not exist.*current folder", str(caught.value))
    assert not (tmp_path / "out").exists()
    monkeypatch.chdir(tmp_path)
    report = run_batch(items, tmp_path / "out", executor="serial", **SPECS)
    assert report.done == ["a"], report.failed
    assert items[0].voice == "recorded:takes/ann.wav"  # the caller's item is left as it was


def test_a_folder_given_as_a_portrait_or_recording_is_named_as_a_folder(tmp_path: Path) -> None:
    (tmp_path / "faces").mkdir()
    (tmp_path / "takes").mkdir()
    f = tmp_path / "s.csv"
    f.write_text("id,text,avatar,voice\na,Hello,faces,\nb,Hi,,recorded:takes\n")
    with pytest.raises(InputValidationError) as caught:
        run_batch(f, tmp_path / "out", executor="serial", **SPECS)
    message = str(caught.value)
    assert f"line 2 (item 1): avatar: {tmp_path / 'faces'} is a folder, not a file" in message
    assert f"line 3 (item 2): voice: recording {tmp_path / 'takes'} is a folder" in message


# --------------------------------------------------------------------------- Ctrl-C


def _slow_item(item: dict, out: str, options: dict) -> tuple[str, None]:
    """A stand-in for render_item in the pool's workers: a second's work, then a marker."""
    import time

    time.sleep(1.0)
    (Path(out) / f"{item['id']}.done").touch()
    return item["id"], None


def _quick_item(item: dict, out: str, options: dict) -> tuple[str, None]:
    (Path(out) / item["id"] / "response.json").parent.mkdir()
    (Path(out) / item["id"] / "response.json").write_text("{}")
    return item["id"], None


def test_ctrl_c_drops_the_queue_and_leaves_no_worker_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import multiprocessing

    import avatarkit.batch

    monkeypatch.setattr(avatarkit.batch, "render_item", _slow_item)
    items = [BatchItem(id=f"q{i}", text=f"Queued item {i}.") for i in range(12)]

    def ctrl_c(done: int, total: int) -> None:  # Ctrl-C as the first item comes back
        raise KeyboardInterrupt

    def run() -> None:  # the traceback is dropped at once, as the CLI drops it
        try:
            run_batch(items, tmp_path, workers=2, progress=ctrl_c, **SPECS)
        except KeyboardInterrupt:
            return
        raise AssertionError("the interrupt was swallowed")

    run()
    # No worker is left rendering (or orphaned, blocked on the pool's queue, after the
    # command has exited) ...
    assert multiprocessing.active_children() == []
    # ... and the queue was dropped: only the items already in a worker's hands ran.
    assert len(list(tmp_path.glob("*.done"))) <= 4


def test_no_more_workers_are_started_than_there_are_items(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import multiprocessing

    import avatarkit.batch

    monkeypatch.setattr(avatarkit.batch, "render_item", _quick_item)
    seen: list[int] = []

    def count(done: int, total: int) -> None:
        seen.append(len(multiprocessing.active_children()))

    items = [BatchItem(id=f"w{i}", text=f"Item {i}.") for i in range(2)]
    report = run_batch(items, tmp_path, workers=64, progress=count, **SPECS)  # a typo's worth
    assert sorted(report.done) == ["w0", "w1"]
    assert max(seen) <= 2
    again = run_batch(items, tmp_path, workers=64, **SPECS)  # nothing left to do: no pool
    assert sorted(again.skipped) == ["w0", "w1"]
