"""Shared fixtures: no test may reach the network (loopback servers are fine), and what the
SDK writes to the system's temporary folder is removed after the run."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from avatarkit.testing import block_provider_requests


@pytest.fixture(autouse=True)
def _no_network() -> Iterator[None]:
    with block_provider_requests():
        yield


@pytest.fixture(autouse=True)
def _nothing_stays_frozen() -> Iterator[None]:
    """The chat server freezes the heap after its warm-up (``gc.freeze``); in one test run
    that would keep every later test's garbage from being collected, so undo it each time."""
    import gc

    yield
    gc.unfreeze()


@pytest.fixture(autouse=True)
def _logging_as_the_library_leaves_it() -> Iterator[None]:
    """A CLI test sets up the command's console handler; the next test starts without it."""
    import logging

    logger = logging.getLogger("avatarkit")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


@pytest.fixture(scope="session", autouse=True)
def _temporary_files_in_one_folder() -> Iterator[None]:
    """Renders without an ``output`` go to a temporary file the caller owns (by design), and
    a test run makes hundreds: they land in one folder, removed after the run, instead of
    piling up in /tmp. Subprocesses (ffmpeg, the CLI, Ray) follow TMPDIR. The folder's path
    stays short: Ray puts Unix sockets under it (at most 107 bytes a path)."""
    folder = tempfile.mkdtemp(prefix="ak-tests-")
    before_env, before = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = folder, folder
    yield
    tempfile.tempdir = before
    if before_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before_env
    shutil.rmtree(folder, ignore_errors=True)
