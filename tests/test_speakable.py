"""What the voice reads: chat models write markdown, links and emoji, and none of it is spoken."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from avatarkit import AvatarBot
from avatarkit.dialogue.speakable import FencedCode, HtmlComments, speakable, speakable_with_offsets
from avatarkit.streaming import SentenceReady
from avatarkit.testing import (
    FakeChatModel,
    FakeExpressionPolicy,
    FakeImageGenerator,
    FakeVoice,
)

MARKDOWN_REPLY = (
    "## Sure!\n\nHere are **three** tips:\n\n1. Drink *water*\n2. Sleep `8h`.\n"
    "- Walk daily 🚶\n\nSee [the guide](https://example.com/guide) or https://www.example.org/x."
)


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        (MARKDOWN_REPLY,
         "Sure!\nHere are three tips:\nDrink water.\nSleep 8h.\nWalk daily.\n"
         "See the guide or example.org."),
        ("# Opening hours\nWe open at nine.", "Opening hours.\nWe open at nine."),
        ("It's __really__ ~~not~~ good.", "It's really not good."),
        ("Run:\n```python\nprint('hi')\n```\nThat's all.", "Run:\nThat's all."),
        ("> Quoted advice here.", "Quoted advice here."),
        ("| Day | Hours |\n|---|---|\n| Mon | 9-5 |", "Day, Hours.\nMon, 9-5."),
        ("Great job! 🎉🎉 👍🏽", "Great job!"),
        ("It's 25°C in snake_case_land, 2*3*4 = 24, and © 2026.",
         "It's 25°C in snake_case_land, 2*3*4 = 24, and © 2026."),
        ("Plain text stays exactly as it is.", "Plain text stays exactly as it is."),
        ("Visit www.example.com/page today", "Visit example.com today"),
        # a reply cut short (max_tokens) inside its code block: the code is not read either
        ("Here:\n```python\nprint('hi')\n", "Here:"),
        ("Run:\n~~~\nmake all\n~~~\nDone.", "Run:\nDone."),
        ("See:\n````md\n```\ninner\n```\n````\nAfter.", "See:\nAfter."),
        ("Try:\n```\nls -la\n``` Then look again.", "Try:\nThen look again."),
        ("Type ```ls -la``` now.", "Type ls -la now."),  # inline code, as with one tick
        ("Then ``` this.", "Then this."),  # a stray fence is not read as backticks
        # a code span ends at a run of its own length, so it may hold a shorter one (CommonMark)
        ("Type ``a`b`` here, or `c`.", "Type a`b here, or c."),
        ("Odd `ticks`` stay.", "Odd `ticks`` stay."),
        # HTML tags are markup too; comparisons are not tags
        ("It prints <b>three</b> numbers <img src=x onerror=alert(1)>.",
         "It prints three numbers."),
        ("Line one<br>line two<!-- a note -->.", "Line one line two."),
        ("If a < b and c > d, or x<y, stop.", "If a < b and c > d, or x<y, stop."),
        ("Compare: if a<b and b>c then stop.", "Compare: if a<b and b>c then stop."),
        ("Write `<b>` to make text bold.", "Write <b> to make text bold."),
        ('A <a href="https://x.io" title="x">link</a> <br/>here.', "A link here."),
    ],
)  # fmt: skip
def test_markdown_links_and_emoji_are_not_read_out(text: str, spoken: str) -> None:
    assert speakable(text) == spoken


def test_offsets_follow_the_text_they_pointed_into() -> None:
    text = "## Hi!\n**Great** news: it works."
    spoken, moved = speakable_with_offsets(text, [3, 7, 17, len(text)])
    assert spoken == "Hi!\nGreat news: it works."
    assert [spoken[o:] for o in moved] == ["Hi!\nGreat news: it works.", "Great news: it works.",
                                           "news: it works.", ""]  # fmt: skip


def _bot(reply: str, voice: FakeVoice) -> AvatarBot:
    return AvatarBot(chat=FakeChatModel(reply), voice=voice, renderer=None,
                     image=FakeImageGenerator(), preprocessor="test", intent="test",
                     sentiment="test", expression=FakeExpressionPolicy())  # fmt: skip


async def test_a_markdown_reply_is_spoken_clean_and_kept_as_written() -> None:
    voice = FakeVoice()
    reply = await _bot("[happy] ## Done!\n**All** set 🎉", voice).respond("hi")
    assert voice.calls == ["Done!\nAll set"]
    assert reply.text == "Done!\nAll set"
    assert reply.dialogue is not None and reply.dialogue.raw_text == (
        "[happy] ## Done!\n**All** set 🎉"
    )
    assert reply.dialogue.emotion_tags == ["happy"]


async def test_say_does_not_read_out_tags_or_markdown() -> None:
    voice = FakeVoice()
    bot = _bot("unused", voice)
    reply = await bot.say("[happy] Hello *smiles* there, **friend**!")
    assert voice.calls == ["Hello there, friend!"]
    assert reply.dialogue is not None and reply.dialogue.emotion_tags == ["happy", "happy"]


async def test_a_streamed_markdown_reply_is_voiced_clean_sentence_by_sentence() -> None:
    voice = FakeVoice()
    bot = _bot("## Tips\n1. Drink **water**.\n2. Sleep well 😴\nSee https://example.com/a.", voice)
    events = [event async for event in bot.stream("tips please")]
    spoken = [e.text for e in events if isinstance(e, SentenceReady)]
    assert spoken == ["Tips.", "Drink water.", "Sleep well.", "See example.com."]
    assert voice.calls == spoken
    final = events[-1].response
    assert final.dialogue.raw_text.startswith("## Tips")
    assert "**" not in final.text and "#" not in final.text


async def test_a_streamed_code_block_is_not_read_line_by_line() -> None:
    voice = FakeVoice()
    reply = "Like this:\n```python\nprint('hi')\nx = 1\n```\nThat prints hi."
    events = [event async for event in _bot(reply, voice).stream("how?")]
    assert [e.text for e in events if isinstance(e, SentenceReady)] == [
        "Like this:",
        "That prints hi.",
    ]


async def test_text_after_a_closing_fence_in_the_same_sentence_is_spoken() -> None:
    reply = "Try:\n```\nls -la\n``` Then look again."
    events = [event async for event in _bot(reply, FakeVoice()).stream("how?")]
    spoken = [e.text for e in events if isinstance(e, SentenceReady)]
    assert spoken == ["Try:", "Then look again."]


CODE_REPLIES = [
    "Like this:\n```python\nprint('hi')\nx = 1\n```\nThat prints hi.",
    "Here it is. ```bash\npip install avatarkit. Then run it.\n",  # cut short, mid-line fence
    "Here:\n```python\nprint('hi')\n",
    "Type ```ls -la``` now. Then press enter.",
    "Then ``` this. And more.",
    "Run:\n~~~\nmake all. Then wait.\n~~~\nDone.",
    "See:\n````md\n```\ninner. Text.\n```\n````\nAfter.",
    "Try:\n```\nls -la\n``` Then look again.",
    "Steps:\n1. Install:\n   ```sh\n   pip install x\n   ```\n2. Run it.",
    "Hi <!-- hidden --> there. And more.",  # "<!" is no sentence end
    "Hi <!-- multi\nline. --> there.",
    "Hi <!-- never **closed**. Then go.",  # no comment: read as whole replies read it
]


@pytest.mark.parametrize("reply", CODE_REPLIES)
async def test_code_is_spoken_alike_streamed_and_whole(reply: str) -> None:
    whole_voice, streamed_voice = FakeVoice(), FakeVoice()
    whole = await _bot(reply, whole_voice).respond("how?")
    events = [event async for event in _bot(reply, streamed_voice).stream("how?")]
    spoken = [e.text for e in events if isinstance(e, SentenceReady)]
    assert " ".join(spoken) == " ".join(whole.text.split())
    assert events[-1].response.text == whole.text
    assert not any(mark in "".join(spoken) for mark in ("`", "~~~"))
    assert events[-1].response.dialogue.raw_text == reply  # what is shown keeps the code


@pytest.mark.parametrize("reply", CODE_REPLIES)
def test_fenced_code_fed_in_any_pieces_keeps_what_speakable_keeps(reply: str) -> None:
    for size in (1, 3, 7, len(reply)):
        code = FencedCode()
        kept = "".join(code.push(reply[i : i + size]) for i in range(0, len(reply), size))
        kept += code.flush()
        assert speakable(kept).split() == speakable(reply).split(), size


def test_the_text_before_a_code_block_is_released_before_the_block_ends() -> None:
    code = FencedCode()
    kept = code.push("Like this:\n```py")
    kept += code.push("thon\nprint('hi')\n")
    assert kept.strip() == "Like this:"
    assert kept.endswith("\n\n")  # a paragraph break: the sentence splitter lets it go now


@pytest.mark.parametrize("reply", [r for r in CODE_REPLIES if "<" in r])
def test_html_comments_fed_in_any_pieces_keep_what_speakable_keeps(reply: str) -> None:
    for size in (1, 2, 3, 5, len(reply)):
        comments = HtmlComments()
        kept = "".join(comments.push(reply[i : i + size]) for i in range(0, len(reply), size))
        kept += comments.flush()
        assert speakable(kept).split() == speakable(reply).split(), size


class _Pieces(FakeChatModel):
    """A chat model that streams its reply in the pieces given."""

    def __init__(self, pieces: list[str]) -> None:
        super().__init__("".join(pieces))
        self.pieces = pieces

    async def stream(self, messages: object) -> AsyncIterator[str]:
        for piece in self.pieces:
            yield piece


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("Type <!- to start.", "Type <!- to start."),
        ("a<!-b <! c <!-", "a<!-b <! c <!-"),
        ("Hi <!-- never closed. Then go.", "Hi <!-- never closed. Then go."),
        ("Odd <!--->x", "Odd <!--->x"),  # a close must follow the whole "<!--"
        ("x <!-- a --> y <!- z", "x  y <!- z"),
        ("<!--a--><!-", "<!-"),
    ],
)
def test_html_comments_pass_every_other_text_unchanged_however_it_is_split(
    text: str, kept: str
) -> None:
    for i in range(len(text) + 1):
        comments = HtmlComments()
        out = comments.push(text[:i]) + comments.push(text[i:]) + comments.flush()
        assert out == kept, i
    comments = HtmlComments()
    assert "".join(comments.push(c) for c in text) + comments.flush() == kept


async def test_a_streamed_less_than_bang_dash_keeps_its_dash_at_every_split() -> None:
    # pysbd ends a sentence at the "!" of "<!", so "- to start." was read as a list item
    reply = "Type <!- to start. Then go."
    whole = await _bot(reply, FakeVoice()).respond("how?")
    assert whole.text == reply
    for i in range(len(reply) + 1):
        bot = AvatarBot(chat=_Pieces([reply[:i], reply[i:]]), voice=FakeVoice(), renderer=None,
                        image=FakeImageGenerator(), preprocessor="test", intent="test",
                        sentiment="test", expression=FakeExpressionPolicy())  # fmt: skip
        events = [event async for event in bot.stream("how?")]
        spoken = [e.text for e in events if isinstance(e, SentenceReady)]
        assert " ".join(spoken) == reply, (i, spoken)
