"""Shared fixtures: the small KG slices in tests/fixtures/kg (real files from each source format)."""

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def kg_dir() -> Path:
    return FIXTURES / "kg"
