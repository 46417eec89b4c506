"""Shared fixtures: the small KG slices in tests/fixtures/kg (real files from each source format)."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def kg_dir() -> Path:
    return FIXTURES / "kg"


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Vectors the tests compute go to a temporary cache, never to the user's ~/.cache or data/."""
    old = os.environ.get("KGPIPE_CACHE")
    os.environ["KGPIPE_CACHE"] = str(tmp_path_factory.mktemp("kgpipe-cache"))
    yield
    if old is None:
        os.environ.pop("KGPIPE_CACHE", None)
    else:
        os.environ["KGPIPE_CACHE"] = old
