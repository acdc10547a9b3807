"""Training and inference speed of the report's models on random full-size inputs; epoch-time estimates.

``python bench/bench_train.py [--quick]`` prints a Markdown section. Per torch model: clips per second of
a training step (forward, backward, optimiser step at the given batch size) and of inference, the
seconds an 800-clip epoch takes at that rate, and the estimated wall time of the ``quick`` and
``report`` presets on the 1000 GTZAN clips. Also: what flushing denormal floats and channels_last buy,
and the SVM's fit on a precomputed Gram matrix against scikit-learn's own RBF kernel.
"""

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features import usable_cpus  # noqa: E402
from models import loop, svm, train  # noqa: E402

TORCH_MODELS = ("cnn1d_raw", "cnn1d_mel", "cnn2d", "lstm")
N_CLIPS = 1000  # GTZAN


def random_batch(name: str, n: int, rng) -> np.ndarray:
    if name == "cnn1d_raw":
        return rng.uniform(-0.5, 0.5, (n, 551250)).astype(np.float32)
    return rng.integers(0, 256, (n, 400, 400, 3), dtype=np.uint8)


def train_rate(name: str, batch: int, steps: int, rng, channels_last=None) -> float:
    """Clips per second of full training steps (after one untimed warm-up step)."""
    module, hp = train.settings(name, "report")
    torch.manual_seed(0)
    net, transform = module.build()
    if hp.channels_last if channels_last is None else channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[hp.optimizer](net.parameters(), lr=hp.lr)
    x_np = random_batch(name, batch, rng)
    y = torch.from_numpy(rng.integers(0, 10, batch))
    net.train()
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        loss = loop._loss(loop._log_probs(net(transform(x_np)), hp.loss), y, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return batch / min(times[1:])


def infer_rate(name: str, batch: int, rng) -> float:
    module, hp = train.settings(name, "report")
    net, transform = module.build()
    if hp.channels_last:
        net = net.to(memory_format=torch.channels_last)
    x_np = random_batch(name, batch, rng)
    net.eval()
    with torch.inference_mode():
        net(transform(x_np))
        t0 = time.perf_counter()
        net(transform(x_np))
    return batch / (time.perf_counter() - t0)


def preset_seconds(name: str, preset: str, rate: float, irate: float) -> float:
    """Estimated wall seconds of a preset on 1000 clips at the measured rates (epoch limits reached)."""
    hp = train.settings(name, preset)[1]
    n_test = 0.2 * N_CLIPS
    n_val = 0.1 * N_CLIPS if hp.split == "r70" else 0.0
    n_train = N_CLIPS - n_test - n_val
    seconds = hp.max_epochs * (n_train / rate + n_val / irate) + n_test / irate
    if hp.final_on_trainval:
        seconds += hp.max_epochs * (n_train + n_val) / rate
    return seconds


def svm_fit_seconds(n: int, rng, with_sklearn_rbf: bool) -> dict:
    labels = np.arange(n) % 10
    x = rng.integers(0, 256, (n, 120, 360, 3), dtype=np.uint8)
    x[np.arange(n), labels * 12] = 255  # some class structure, so the fit is not degenerate
    out = {}
    t0 = time.perf_counter()
    params = svm.fit(x, labels)
    out["gram"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    svm.decision_scores(params, x[:50])
    out["score_per_clip"] = (time.perf_counter() - t0) / 50
    if with_sklearn_rbf:
        from sklearn.svm import SVC

        t0 = time.perf_counter()
        SVC(kernel="rbf", C=svm.HPARAMS.C, gamma=svm.HPARAMS.gamma).fit(svm.flatten(x), labels)
        out["sklearn"] = time.perf_counter() - t0
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="batches of 4 clips, 1 timed step, SVM on 200 clips")
    args = p.parse_args(argv)
    threads = usable_cpus()
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    rng = np.random.default_rng(0)
    steps = 1 if args.quick else 2

    rows, quick_total, report_total = [], 0.0, 0.0
    for name in TORCH_MODELS:
        hp = train.settings(name, "report")[1]
        batch = 4 if args.quick else hp.batch_size
        rate = train_rate(name, batch, steps, rng)
        irate = infer_rate(name, batch, rng)
        quick, report = preset_seconds(name, "quick", rate, irate), preset_seconds(name, "report", rate, irate)
        quick_total, report_total = quick_total + quick, report_total + report
        q = train.settings(name, "quick")[1]
        rows.append(f"| {name} | {batch} | {rate:.2f} | {800 / rate:.0f} | {irate:.1f} | "
                    f"{q.max_epochs}{' + retrain' if q.final_on_trainval else ''} | {quick / 60:.1f} | "
                    f"{report / 3600:.1f} |")

    # what the speed-ups that keep the model buy (small batches: the ratios are what matters)
    torch.set_flush_denormal(False)
    lstm_denormal = train_rate("lstm", 8, 2, rng)
    torch.set_flush_denormal(True)
    lstm_flush = train_rate("lstm", 8, 2, rng)
    cnn2d_plain = train_rate("cnn2d", 20, 2, rng, channels_last=False)
    cnn2d_cl = train_rate("cnn2d", 20, 2, rng, channels_last=True)

    n_svm = 200 if args.quick else 800
    fit = svm_fit_seconds(n_svm, rng, with_sklearn_rbf=True)
    svm_quick = fit["gram"] * (800 / n_svm) ** 2 + 200 * fit["score_per_clip"]
    quick_total += svm_quick

    print(f"## Training speed (bench_train.py{' --quick' if args.quick else ''})\n")
    print(f"Random full-size inputs, {threads} torch threads, denormals flushed (as `models.train.run`). "
          "Train rate: forward + backward + optimiser step. Estimates for the 1000 GTZAN clips with every "
          "epoch limit reached (the stopping rules can only shorten them). Not included: reading batches "
          "out of the cache and writing checkpoints, so the real loop is somewhat slower (run_all.py's "
          "docstring has epochs timed through it).\n")
    print("| model | batch | train clips/s | s per 800-clip epoch | inference clips/s | quick epochs "
          "| quick preset min | report preset h |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"| svm | - | - | - | {1 / fit['score_per_clip']:.1f} | fit once | {svm_quick / 60:.1f} | "
          f"{svm_quick / 3600:.2f} |")
    print(f"\n**quick preset, all five: ~{quick_total / 60:.0f} min** (budget: 30 min on 2 cores); "
          f"report preset: ~{report_total / 3600:.1f} h at most on this CPU.\n")
    print("| speed-up (same model, same numbers up to rounding) | without | with | ratio |")
    print("|---|---|---|---|")
    print(f"| LSTM training, flush denormals (`torch.set_flush_denormal`) | {lstm_denormal:.2f} clips/s | "
          f"{lstm_flush:.2f} clips/s | {lstm_flush / lstm_denormal:.1f}x |")
    print(f"| cnn2d training, channels_last | {cnn2d_plain:.2f} clips/s | {cnn2d_cl:.2f} clips/s | "
          f"{cnn2d_cl / cnn2d_plain:.1f}x |")
    print(f"| SVM fit on {n_svm} clips of 129600 pixels: precomputed Gram vs sklearn's RBF | "
          f"{fit['sklearn']:.1f} s | {fit['gram']:.1f} s | {fit['sklearn'] / fit['gram']:.0f}x |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("\nNotes: batch sizes are the report's" + (" (here 4: --quick)" if args.quick else "")
          + "; per-clip rates grow a little with the batch. The quick SVM time scales the measured fit "
          "quadratically to 800 clips. Denormal floats (below 1e-38) turn up in the gradients of the "
          "LSTM's 400 steps (how many depends on the weights and data, so the ratio varies); on x86 "
          f"arithmetic on them is many times slower. Peak memory of this benchmark: {peak:.1f} GiB "
          "(the largest: cnn1d_raw at batch 50).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
