"""The GPU path, run on the CPU: inputs resident on the training device (the same numbers, bit for bit,
as batches read from the memory map), checkpoints on a time interval, the head fit's thread limit, and
bench/bench_gpu.py without a GPU. Everything here runs without CUDA."""

import csv
import functools
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO
from features.cache import open_cache
from models import best, cnn1d_mel, cnn1d_raw, cnn2d, loop, lstm, train
from test_train import write_fake_cache

CPU = torch.device("cpu")
FIT = loop.fit


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Two classes, ten clips each: images (uint8) and waveforms (int16, scaled and cropped)."""
    return write_fake_cache(tmp_path_factory.mktemp("gpu") / "fake", n_per_class=10, n_classes=2,
                            views=("img400", "wave"))


@pytest.mark.parametrize("module", [cnn1d_raw, cnn1d_mel, cnn2d, lstm])
def test_a_resident_batch_is_the_memmaps_batch(cache, module):
    """Indexed and converted on the device, a batch has the values, dtype, shape and strides (cnn2d's
    channels_last) of the batch read out of the memory map and converted on the CPU."""
    data, hp = open_cache(cache), module.HPARAMS
    host, resident = (loop.feed_of(module, hp, data, CPU, resident=r) for r in (False, True))
    assert host.resident is None and str(resident.resident.arr.dtype) == f"torch.{host.arr.dtype}"
    idx = np.array([0, 3, 11, 19])
    a = loop._read(host, host.rows(idx), module.transform)
    b = loop._read(resident, resident.rows(idx), module.transform)
    assert torch.equal(a, b) and a.dtype == b.dtype == torch.float32 and a.stride() == b.stride()
    assert torch.equal(loop._labels(host, host.rows(idx)), loop._labels(resident, resident.rows(idx)))


def _run(cache, root, resident, monkeypatch) -> dict:
    """One tiny cnn1d_mel run with its retrain on train+val: its log, history, weights and predictions."""
    monkeypatch.setattr(loop, "fit", functools.partial(FIT, resident=resident))
    lines = []
    r = train.run("cnn1d_mel", cache, root, preset="tiny", threads=2, log=lines.append)
    d = root / "fake" / "cnn1d_mel" / "r70-tiny-seed0"
    history = [{k: v for k, v in row.items() if k != "seconds"}
               for name in ("history.csv", "history_final.csv") for row in csv.DictReader(open(d / name))]
    with np.load(d / "predictions.npz") as z:
        return {"test": r["test"], "lines": lines, "history": history, "log_probs": z["log_probs"],
                "weights": torch.load(d / "model.pt", weights_only=True)}


def test_resident_training_gives_the_same_numbers_bit_for_bit(cache, tmp_path, monkeypatch):
    monkeypatch.setitem(cnn1d_mel.PRESETS, "tiny", {**cnn1d_mel.PRESETS["tiny"], "final_on_trainval": True})
    host, resident = (_run(cache, tmp_path / str(r), r, monkeypatch) for r in (False, True))
    assert any("img400 held on cpu as stored" in line for line in resident["lines"])
    assert not any("held on" in line for line in host["lines"])
    assert len(host["history"]) == 4  # 2 epochs, then 2 on train+val: losses and accuracies
    assert host["history"] == resident["history"] and host["test"] == resident["test"]
    assert np.array_equal(host["log_probs"], resident["log_probs"])
    weights = host["weights"]
    assert weights.keys() == resident["weights"].keys()
    assert all(torch.equal(weights[k], resident["weights"][k]) for k in weights)


def test_checkpoints_wait_their_interval_but_each_phase_ends_with_one(cache, tmp_path, monkeypatch):
    monkeypatch.setitem(cnn1d_mel.PRESETS, "tiny", {**cnn1d_mel.PRESETS["tiny"], "final_on_trainval": True})
    saved = []
    save = loop._Resume.save

    def counted(self, phase, epoch, *rest):
        saved.append((phase, epoch))
        save(self, phase, epoch, *rest)

    monkeypatch.setattr(loop._Resume, "save", counted)
    for seconds, runs in ((loop.CHECKPOINT_SECONDS, "default"), (0.0, "every")):
        monkeypatch.setattr(loop, "CHECKPOINT_SECONDS", seconds)
        saved.clear()
        train.run("cnn1d_mel", cache, tmp_path / runs, preset="tiny", threads=2, log=lambda line: None)
        assert saved == ([("main", 2), ("final", 2)] if runs == "default" else
                         [("main", 1), ("main", 2), ("final", 1), ("final", 2)])


def test_the_input_fits_in_half_the_free_gpu_memory(cache, monkeypatch):
    wave = open_cache(cache).array("wave")  # 20 rows, cropped to cnn1d_raw's 551250 int16 samples
    needed = 20 * cnn1d_raw.N_SAMPLES * 2
    assert not loop.fits_on_device(wave, cnn1d_raw.HPARAMS, CPU)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 300)  # 100 bytes held unused
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 200)
    for free, fits in ((2 * needed - 100, True), (2 * needed - 101, False)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, free=free: (free, 10 * free))
        assert loop.fits_on_device(wave, cnn1d_raw.HPARAMS, torch.device("cuda")) == fits


def test_the_head_fits_on_one_blas_and_openmp_thread(monkeypatch):
    from threadpoolctl import threadpool_info

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 12)
    x = (rng.normal(0, 1, (36, 2, 40)) + 0.5 * y[:, None, None]).astype(np.float32)
    one_thread = []
    logistic = best._logistic

    def spy(C, max_iter):
        one_thread.append(all(pool["num_threads"] == 1 for pool in threadpool_info()))
        return logistic(C, max_iter)

    monkeypatch.setattr(best, "_logistic", spy)
    best.fit(x, np.full(36, 2), y, [f"t{i // 2}" for i in range(36)], best.HeadParams(Cs=(0.01, 0.1), cv_folds=3),
             n_classes=3)
    assert one_thread == [True] * (2 * 3 + 1)  # 2 Cs x 3 folds, then the fit on all the rows


def test_bench_gpu_without_cuda_says_so_in_one_line():
    r = subprocess.run([sys.executable, "bench/bench_gpu.py", "--quick"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout == "" and r.stderr.strip() == "bench_gpu: no CUDA device: skipped"
