"""The training path on a CUDA GPU at GTZAN's size: ``python bench/bench_gpu.py [--clips N] [--quick]``.

Prints a Markdown section naming the GPU. On ``--clips`` synthetic 30-s clips per class (default 100:
GTZAN's 1000): the feature cache (decode, dB mel, images) and best's musicnn features with the backbone
on the GPU; per model, its settings as the report gives them (batch size, split), the seconds per epoch
as the loop runs it (training, evaluation, checkpoints), clips trained per second, where its inputs
lived and the GPU's utilisation and memory while it trained (``nvidia-smi`` every 0.25 s), each net
over ``--epochs`` epochs, the first (cuDNN's warm-up) left out; svm and best per fit. Then the whole
``run_all.py`` (preset report, every model, its own runs folder) and its table, unless ``--quick``.
Without a CUDA device it says so in one line on stderr and exits 0, so ``make bench`` runs anywhere.
``../shared/gpu/check.sh`` runs it on a lent GPU (give it ``PER_MODEL_S=600`` for the whole run_all.py).
"""

import argparse
import csv
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features import cache, synth  # noqa: E402
from models import train  # noqa: E402
from models.family import ModelError, family_of  # noqa: E402

NETS = ("cnn1d_raw", "cnn1d_mel", "cnn2d", "lstm")
MODELS = NETS + ("svm", "best")
SAMPLE_MS = 250
DEVICE = "cuda"


class Smi:
    """GPU utilisation (%) and memory used (MiB) of torch's GPU, sampled by ``nvidia-smi`` in the background."""

    def __init__(self, device):
        self.samples = []  # (time.perf_counter(), utilisation, memory)
        # nvidia-smi numbers the GPUs its own way (CUDA_VISIBLE_DEVICES aside): the UUID names torch's
        self.uuid = str(torch.cuda.get_device_properties(device).uuid)
        query = ["nvidia-smi", "--query-gpu=uuid,utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                 f"--loop-ms={SAMPLE_MS}"]
        try:
            self.proc = subprocess.Popen(query, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:  # no nvidia-smi: the columns say "-"
            self.proc = None
            return
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            uuid, *values = line.split(",")
            try:
                if self.uuid in uuid:
                    self.samples.append((time.perf_counter(), *(float(v) for v in values)))
            except ValueError:  # "[N/A]": no sample
                continue

    def between(self, t0: float, t1: float) -> tuple:
        """(mean utilisation %, peak memory GiB) of the samples taken from t0 to t1, as text; "-" for none."""
        inside = [(u, m) for t, u, m in self.samples if t0 <= t <= t1]
        if not inside:
            return "-", "-"
        return f"{statistics.mean(u for u, _ in inside):.0f}", f"{max(m for _, m in inside) / 1024:.1f}"

    def close(self):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()


def build_features(data: Path, cache_root: Path, device: str) -> tuple:
    """(cache folder, seconds of the feature cache, seconds of best's features or a note why none)."""
    t0 = time.perf_counter()
    cache_dir = cache.ensure_features(data, cache_root, progress=False)
    features_s = time.perf_counter() - t0
    hp = train.settings("best", "report")[1]
    try:
        embedder = family_of("best").embedder(hp, device=device)
    except ModelError as err:
        return cache_dir, features_s, f"skipped: {err}"
    t0 = time.perf_counter()
    cache.ensure_features(data, cache_root, arrays=("labels",) + train.inputs("best", hp), progress=False,
                          embedder=embedder)
    return cache_dir, features_s, time.perf_counter() - t0


def one_model(name: str, cache_dir: Path, runs: Path, epochs: int, device: str, smi: Smi) -> str:
    """The table row of one model: nets over ``epochs`` epochs (the report's batch size, no early stop,
    no retrain), svm and best one fit of the report's protocol."""
    module, hp = train.settings(name, "report")
    is_net = name in NETS
    if is_net:  # the bench's own preset: only the epoch count and the protocol's length change
        module.PRESETS["tiny"] = {"max_epochs": epochs, "stop_acc": None, "final_on_trainval": False}
    logged = []  # (time, line)
    t0 = time.perf_counter()
    r = train.run(name, cache_dir, runs, preset="tiny" if is_net else "report", force=True, device=device,
                  log=lambda line: logged.append((time.perf_counter(), line)))
    t1 = time.perf_counter()
    if not is_net:
        return (f"| {name} | {hp.split} | - | {r['n_train']} | {t1 - t0:.1f} (fit) | {r['n_train'] / (t1 - t0):.0f} "
                f"| - | {' | '.join(smi.between(t0, t1))} |")
    with open(Path(r["run_dir"]) / "history.csv") as f:
        seconds = [float(row["seconds"]) for row in csv.DictReader(f)]
    per_epoch = statistics.median(seconds[1:] or seconds)
    ends = [t for t, line in logged if " epoch " in line]  # epoch k's line: the end of epoch k
    inputs = "GPU" if any(" held on " in line for _, line in logged) else "pinned host"
    return (f"| {name} | {hp.split} | {hp.batch_size} | {r['n_train']} | {per_epoch:.2f} | "
            f"{r['n_train'] / per_epoch:.0f} | {inputs} | {' | '.join(smi.between(ends[0], ends[-1]))} |")


def library(runs: Path, data: Path, smi: Smi) -> str:
    """The library issue's GPU figure: ``predict.py``'s engine classifying every clip of ``data`` with
    best's run on the GPU, the usable cores preparing files; files/s and the GPU's utilisation."""
    from features import usable_cpus
    from models import engine
    from models import runs as run_store

    run_dirs = run_store.choose_runs(runs, "best", note=lambda line: None)
    classifier = engine.Classifier(engine.Spec(tuple(map(str, run_dirs)), str(runs), device=DEVICE))
    files = sorted(data.glob("*/*.wav"))
    classifier.predictor.classify(files[0])  # warm-up: cuDNN, numba's cache
    t0 = time.perf_counter()
    failed = sum("error" in record for _, record in engine.classify(classifier, files, usable_cpus()))
    t1 = time.perf_counter()
    return (f"\nClassifying a library (`models.engine`, best on the GPU, --jobs {usable_cpus()}): {len(files)} "
            f"30-s files in {t1 - t0:.1f} s, **{len(files) / (t1 - t0):.0f} files/s** (goal >= 300), {failed} "
            f"failed; GPU utilisation {' %, memory '.join(smi.between(t0, t1))} GiB.")


def whole_run_all(data: Path, cache_root: Path, runs: Path, smi: Smi) -> tuple:
    """(wall seconds, GPU columns, run_all.py's own table) of ``run_all.py --preset report``."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(REPO / "run_all.py"), "--data", str(data), "--cache", str(cache_root),
                        "--runs", str(runs), "--preset", "report"], cwd=REPO, capture_output=True, text=True)
    t1 = time.perf_counter()
    table = [line for line in r.stdout.splitlines() if line.startswith("|")]
    if r.returncode:
        table.append(f"(run_all.py exit {r.returncode}: {r.stderr.strip().splitlines()[-1:]})")
    return t1 - t0, smi.between(t0, t1), table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=100, help="synthetic clips per class (default 100: GTZAN's size)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per net; the first is left out (default 3)")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {','.join(MODELS)}")
    p.add_argument("--quick", action="store_true", help="20 clips per class, 2 epochs, no whole run_all.py")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device: skipped", file=sys.stderr)
        return 0
    clips, epochs = (20, 2) if args.quick else (args.clips, args.epochs)
    # a timeout's SIGTERM ends the bench through `finally`: nvidia-smi stopped, the work folder removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    device = DEVICE
    smi = Smi(device)
    work = Path(tempfile.mkdtemp(prefix="bench_gpu-"))
    try:
        t0 = time.perf_counter()
        data = synth.write_dataset(work / "synthetic", n_per_class=clips)
        synth_s = time.perf_counter() - t0
        cache_dir, features_s, embed = build_features(data, work / "cache", device)
        name = torch.cuda.get_device_name(device)
        print(f"## GPU training path (`bench/bench_gpu.py{' --quick' if args.quick else ''}`)\n\n"
              f"GPU: {name}, {torch.cuda.get_device_properties(device).total_memory / 2**30:.0f} GiB; torch "
              f"{torch.__version__}. {10 * clips} synthetic 30-s clips (written in {synth_s:.0f} s). Feature "
              f"cache (decode, dB mel, images): {features_s:.1f} s; best's musicnn features with the backbone on "
              f"the GPU: " + (f"{embed:.1f} s" if isinstance(embed, float) else embed) + ".\n", flush=True)
        print("| model | split | batch | clips trained | s per epoch | clips/s | inputs | GPU util % | "
              "GPU memory GiB |\n|---|---|---|---|---|---|---|---|---|", flush=True)
        for model in args.models.split(","):
            if model == "best" and not isinstance(embed, float):
                print(f"| best | {embed} |", flush=True)
                continue
            print(one_model(model, cache_dir, work / "runs", epochs, device, smi), flush=True)
        if "best" in args.models.split(",") and isinstance(embed, float):
            print(library(work / "runs", data, smi), flush=True)
        print("\nNets: the median epoch after the first, as the loop runs it (training, the evaluation of "
              "the validation or monitored test part, the checkpoint when due); utilisation and memory over "
              "those epochs. svm and best: one fit of the report's protocol (best's head: C by grouped CV, "
              "then the fit), its wall time.", flush=True)
        if not args.quick:
            wall, (util, memory), table = whole_run_all(data, work / "cache", work / "runs_all", smi)
            print(f"\nWhole `run_all.py --preset report` (the five report models and best, each on its own "
                  f"split, best also on all; the feature cache above reused where current): "
                  f"**{wall / 60:.1f} min**, GPU utilisation {util} % on average, peak memory {memory} GiB."
                  "\n\n" + "\n".join(table))
    finally:
        smi.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
