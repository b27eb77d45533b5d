from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from schoolgate.agent.blockpage import UnblockStore
from tests.agent.blockpage.support import FakePolicy


@pytest.fixture
def store(tmp_path: Path) -> Iterator[UnblockStore]:
    store = UnblockStore(tmp_path / "state")
    yield store
    store.close()


@pytest.fixture
def policy() -> FakePolicy:
    policy = FakePolicy()
    policy.block("blocked.example")
    return policy
