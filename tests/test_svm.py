"""The SVM: the Gram-matrix fit equals scikit-learn's RBF SVC, scoring from saved arrays, real data."""

import csv

import numpy as np
import pytest
from sklearn.metrics.pairwise import rbf_kernel as sk_rbf_kernel
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from features.dataset import track_id
from models import splits, svm, top_k_accuracy


def images(labels, seed, shape=(12, 36, 3)):
    """Small images: a class prototype half-blended with noise (overlapping classes, many SVs)."""
    rng = np.random.default_rng(seed)
    proto = np.random.default_rng(99).integers(0, 256, (10,) + shape)
    return (0.5 * proto[labels] + 0.5 * rng.integers(0, 256, (len(labels),) + shape)).astype(np.uint8)


def test_rbf_kernel_matches_sklearn():
    a, b = svm.flatten(images(np.arange(7) % 10, 0)), svm.flatten(images(np.arange(5) % 10, 1))
    assert np.allclose(svm.rbf_kernel(a, b, 2**-8), sk_rbf_kernel(a.astype(np.float64), b.astype(np.float64),
                                                                   gamma=2**-8), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("n_classes_present", [10, 2])
def test_precomputed_fit_agrees_with_sklearn_rbf_svc(tmp_path, n_classes_present):
    y = np.arange(120) % n_classes_present
    x, x_test = images(y, 0), images(np.arange(60) % 10, 1)
    hp = svm.SvmParams(gamma=2**-8)
    params = svm.fit(x, y, hp)
    ref = SVC(kernel="rbf", C=hp.C, gamma=hp.gamma, break_ties=True)
    ref.fit(svm.flatten(x).astype(np.float64), y)
    ref_x = svm.flatten(x_test).astype(np.float64)
    assert sorted(params["n_support"]) == sorted(ref.n_support_)
    scores = svm.decision_scores(params, x_test)
    assert scores.shape == (60, 10)
    assert (scores.argmax(1) == ref.predict(ref_x)).all()  # top-1 is predict
    if n_classes_present == 10:
        assert np.abs(scores - ref.decision_function(ref_x)).max() < 1e-4
    else:  # absent classes score below every present one; the sign of the binary case is right
        assert (scores[:, 2:] == -1).all()
        assert ((ref.decision_function(ref_x) > 0) == (scores[:, 1] > scores[:, 0])).all()
    svm.save(tmp_path / "svm.npz", params)
    assert np.array_equal(svm.decision_scores(svm.load(tmp_path / "svm.npz"), x_test), scores)
    assert params["support_vectors"].dtype == np.uint8  # what a new clip is scored against


def test_report_svm_settings():
    assert (svm.HPARAMS.view, svm.HPARAMS.C, svm.HPARAMS.gamma, svm.HPARAMS.split) == \
        ("img360x120", 100.0, 2.0**-14, "r80")
    from models import svm400

    assert svm400.HPARAMS.view == "img400" and svm400.fit is svm.fit


def test_kaggle_features_svm_on_seed0_r80_split(shared_data):
    with open(shared_data / "features_30_sec.csv") as f:
        rows = list(csv.DictReader(f))
    classes = sorted({r["label"] for r in rows})
    ids = [track_id(r["filename"]) for r in rows]
    labels = np.array([classes.index(r["label"]) for r in rows])
    x = np.array([[float(v) for k, v in r.items() if k not in ("filename", "length", "label")] for r in rows])
    assert x.shape == (1000, 57) and len(classes) == 10
    parts = splits.split_indices(ids, labels, "r80", seed=0)
    assert (len(parts["train"]), len(parts["test"])) == (800, 200)
    scaler = StandardScaler().fit(x[parts["train"]])
    clf = SVC(C=10, gamma="scale", break_ties=True)
    clf.fit(scaler.transform(x[parts["train"]]), labels[parts["train"]])
    scores = clf.decision_function(scaler.transform(x[parts["test"]]))
    top1 = top_k_accuracy(labels[parts["test"]], scores, 1)
    assert top1 == pytest.approx(clf.score(scaler.transform(x[parts["test"]]), labels[parts["test"]]))
    assert top1 >= 0.6
    assert top_k_accuracy(labels[parts["test"]], scores, 3) > top1
