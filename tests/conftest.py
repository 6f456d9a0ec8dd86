"""Shared fixtures: no test may reach the network (loopback servers are fine)."""

from __future__ import annotations

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
