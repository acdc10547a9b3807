"""Shared fixtures: the read-only sample data beside the repo, skipped cleanly when absent."""
import os
from pathlib import Path

import pytest

# The suite checks CPU behaviour (the quick preset as default, CPU determinism): whatever torch build
# .venv holds (`make all` installs the CUDA one on a GPU machine), neither it nor its subprocesses see a GPU.
os.environ["CUDA_VISIBLE_DEVICES"] = ""

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real GTZAN extracts and metadata); skips the test when absent."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A synthetic data set (3 clips of 5 s per genre) and the runs root of an SVM trained on all of it
    (``synthetic/svm/all-tiny-seed0``). Shared: copy it before damaging anything."""
    from features import synth
    from features.cache import ensure_features
    from models import train

    tmp = tmp_path_factory.mktemp("trained")
    data = synth.write_dataset(tmp / "synthetic", n_per_class=3, duration=5.0)
    cache_dir = ensure_features(data, cache_root=tmp / "cache", arrays=("labels", "lengths", "img360x120"),
                                progress=False)
    train.run("svm", cache_dir, runs_root=tmp / "runs", split="all", preset="tiny", log=lambda line: None)
    return data, tmp / "runs"
