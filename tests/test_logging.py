"""avatarkit logs like a library: a NullHandler, no handlers of its own, nothing printed."""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import logging, sys
    import avatarkit as ak
    from avatarkit.testing import FakeVoice

    class Down(FakeVoice):
        async def synthesize(self, text):
            raise ak.ProviderStatusError("503", provider="tts", status=503)

    bot = ak.AvatarBot(voice=Down(), renderer=None)
    try:
        bot.respond_sync("hello")
    except ak.StageError:
        pass  # handled: nothing may reach stderr
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)  # the app opts in
    try:
        bot.respond_sync("hello")
    except ak.StageError:
        pass
    """
)


def test_a_handled_failure_prints_nothing_until_the_app_configures_logging(
    tmp_path: Path,
) -> None:
    script = tmp_path / "handled.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr == ""
    assert "stage voice failed" in out.stdout  # the app's own handler still gets the record


def test_the_library_adds_only_a_null_handler() -> None:
    for module in ("avatarkit.config", "avatarkit.bot", "avatarkit._http", "avatarkit.registry"):
        importlib.import_module(module)
    root = logging.getLogger("avatarkit")
    assert any(isinstance(h, logging.NullHandler) for h in root.handlers)
    for name in ["avatarkit", *logging.Logger.manager.loggerDict]:
        if name == "avatarkit" or name.startswith("avatarkit."):
            logger = logging.getLogger(name)
            assert all(type(h) is logging.NullHandler for h in logger.handlers), name
