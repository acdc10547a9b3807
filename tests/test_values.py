"""Our feature values against the committed reference of their code version (see make_value_reference.py).

A change to the values of ``audio.load``, ``mel.mel_db``, ``images.image_views`` or the cache's window
must bump that module's ``VERSION`` (the cache fingerprints hold it, so the cache rebuilds exactly
then) and regenerate the reference; a speed-only rewrite must leave these values alone.
"""
import numpy as np
import pytest

from make_value_reference import OUT, signals, values, versions

# the float32 mel may differ in its last bits between CPU instruction sets; anything that changes a
# value by more than this is a change of the algorithm
MEL_ATOL_DB = 1e-4


@pytest.fixture(scope="module")
def reference():
    with np.load(OUT) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def now(tmp_path_factory):
    return values(signals(tmp_path_factory.mktemp("signals")))


@pytest.mark.parametrize("module, keys", [
    ("audio", ("pcm16/load", "stereo44k/load")),
    ("mel", ("pcm16/mel", "stereo44k/mel")),
    ("images", ("pcm16/img400", "pcm16/img360x120", "pcm16/img120")),
    ("cache", ("pcm16/pcm",)),
])
def test_values_unchanged_unless_version_bumped(reference, now, module, keys):
    if int(reference[f"version/{module}"]) != versions()[module]:
        pytest.fail(f"features.{module}.VERSION moved: regenerate tests/data/value_reference.npz with "
                    f"tests/make_value_reference.py")
    for key in keys:
        if key.endswith("/mel"):
            np.testing.assert_allclose(now[key], reference[key], rtol=0, atol=MEL_ATOL_DB, err_msg=key)
        else:
            np.testing.assert_array_equal(now[key], reference[key], err_msg=f"{key} changed: bump "
                                          f"features.{module}.VERSION and regenerate the reference")
