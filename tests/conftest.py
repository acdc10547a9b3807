"""Shared fixtures: the read-only sample data beside the repo, skipped cleanly when absent."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real GTZAN extracts and metadata); skips the test when absent."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA
