"""End to end: audio -> `python -m features` -> `run_all.py` -> `evaluate.py`, on real and synthetic clips."""
import json

import numpy as np

import evaluate
import run_all
from features import __main__ as features_cli
from features import cache, synth


def test_real_clips_features_svm_predictions(shared_data, tmp_path, capsys):
    """The 29 real full GTZAN clips through the whole path, with the report's SVM."""
    assert features_cli.main(["--data", str(shared_data / "gtzan_sample"), "--cache", str(tmp_path / "cache")]) == 0
    c = cache.open_cache(tmp_path / "cache" / "gtzan_sample")
    assert c.manifest["n"] == 29 and c.manifest["wave"]["dtype"] == "int16"
    assert run_all.main(["--data", str(shared_data / "gtzan_sample"), "--cache", str(tmp_path / "cache"),
                         "--runs", str(tmp_path / "runs"), "--models", "svm", "--preset", "quick"]) == 0
    run = tmp_path / "runs" / "gtzan_sample" / "svm" / "r80-quick-seed0"
    assert (run / "COMPLETE").exists()
    with np.load(run / "predictions.npz") as z:
        scores, labels, files = z["scores"], z["labels"], list(z["files"])
    assert scores.shape == (len(labels), 10) and scores.dtype == np.float32 and np.isfinite(scores).all()
    assert set(files) <= set(c.files) and 0 < len(files) < 29
    assert labels.tolist() == [c.labels[c.files.index(f)] for f in files]
    capsys.readouterr()
    assert evaluate.main(["--model", "svm", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "rep"),
                          "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "gtzan_sample" in json.dumps(out)
    assert (tmp_path / "rep" / "confusion_svm_r80.png").stat().st_size > 1000


def test_synthetic_run_all_then_evaluate(tmp_path, capsys):
    """A tiny synthetic set: features, two torch models and the SVM, the report tables and figures."""
    data = synth.write_dataset(tmp_path / "synthetic", n_per_class=3, duration=5.0)
    args = ["--data", str(data), "--cache", str(tmp_path / "cache"), "--runs", str(tmp_path / "runs"),
            "--preset", "tiny"]
    assert run_all.main(args + ["--models", "svm,cnn1d_mel,lstm"]) == 0
    out = capsys.readouterr().out
    assert "| cnn1d_mel | r70 | tiny |" in out and "| svm | r80 | tiny |" in out
    assert run_all.main(args + ["--models", "svm"]) == 0  # complete: skipped, not retrained
    assert evaluate.main(["--all", "--pca", "--runs", str(tmp_path / "runs"), "--cache",
                          str(tmp_path / "cache" / "synthetic"), "--out", str(tmp_path / "rep")]) == 0
    text = capsys.readouterr().out
    assert "synthetic" in text and "tiny" in text
    for name in ("pca.png", "confusion_cnn1d_mel_r70.png", "curves_lstm_r80.png", "confusion_svm_r80.png"):
        assert (tmp_path / "rep" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
