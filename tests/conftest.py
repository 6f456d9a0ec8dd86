"""Shared fixtures: no test may reach the network (loopback servers are fine)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from avatarkit.testing import block_provider_requests


@pytest.fixture(autouse=True)
def _no_network() -> Iterator[None]:
    with block_provider_requests():
        yield
