"""Speed of the Ray engine (``models/cluster.py``) against the local one (``models/engine.py``).

``python bench/bench_cluster.py [--files M] [--repeats R] [--batch-size B] [--quick]`` prints a Markdown
section: files/s over M synthetic 30-s files (``features.synth``) through ``models.engine.classify`` (the model
loaded once, ``jobs`` = usable cores) and through ``models.cluster.classify`` on a local Ray of 2 CPUs
(two actors), for an SVM run (tiny, trained on a small synthetic set as the tests' ``trained``) and
for musicnn's tags when the musicnn wheel is installed. Ray is timed three ways:

- cold: ``classify`` starting its own Ray and shutting it down, what ``predict.py --engine ray`` pays;
- Ray up: ``ray.init`` done before, so a job on a running cluster (its actors still start and load the
  model);
- marginal: files/s from (t(M) - t(M/4)) / (3M/4) with Ray up, so start-up cancels out; the same for
  the local engine. Ray's overhead is the ratio of the two times per file, minus 1; goal <= 15 %.

Timings are medians over R interleaved runs (``--quick``: one, M = 20); Ray cold is timed once.
Without Ray it prints why and exits 0.
"""

import argparse
import importlib.util
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features import synth, usable_cpus  # noqa: E402

GOAL_OVERHEAD = 0.15
RAY_CPUS = 2


def train_svm(tmp: Path) -> Path:
    """A tiny SVM ``all`` run on 3 synthetic 5-s clips per genre, as the tests' ``trained``; its folder."""
    from features.cache import ensure_features
    from models import train

    data = synth.write_dataset(tmp / "synthetic", n_per_class=3, duration=5.0)
    cache_dir = ensure_features(data, cache_root=tmp / "cache", arrays=("labels", "lengths", "img360x120"),
                                progress=False)
    train.run("svm", cache_dir, runs_root=tmp / "runs", split="all", preset="tiny", log=lambda line: None)
    (run_dir,) = (tmp / "runs").glob("*/svm/*")
    return run_dir


def seconds(records) -> float:
    """Wall seconds to consume the iterator ``records``."""
    t0 = time.perf_counter()
    for _ in records:
        pass
    return time.perf_counter() - t0


def bench_spec(spec, files: list, repeats: int, batch: int) -> dict:
    """Median wall seconds over all ``files`` and over a quarter of them: local and with Ray up, the
    four interleaved so that a load on the machine slows them alike; and Ray cold, once."""
    import ray

    from models import cluster, engine

    classifier, quarter, jobs = engine.Classifier(spec), files[:len(files) // 4], usable_cpus()
    runs = {"local": lambda: engine.classify(classifier, files, jobs),
            "up": lambda: cluster.classify(spec, files, batch_size=batch),
            "local_q": lambda: engine.classify(classifier, quarter, jobs),
            "up_q": lambda: cluster.classify(spec, quarter, batch_size=batch)}
    cold = seconds(cluster.classify(spec, files, batch_size=batch))
    times = {name: [] for name in runs}
    ray.init(address="local", num_cpus=RAY_CPUS, log_to_driver=False, include_dashboard=False,
             logging_level=logging.ERROR)
    try:
        for _ in range(repeats):
            for name, records in runs.items():
                times[name].append(seconds(records()))
    finally:
        ray.shutdown()
    return {"cold": cold, **{name: statistics.median(t) for name, t in times.items()}}


def startup() -> tuple:
    """(ray.init, ray.shutdown) wall seconds of a local 2-CPU Ray."""
    import ray

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=RAY_CPUS, log_to_driver=False, include_dashboard=False,
             logging_level=logging.ERROR)
    t1 = time.perf_counter()
    ray.shutdown()
    return t1 - t0, time.perf_counter() - t1


def row(name: str, n: int, t: dict) -> str:
    marginal = {k: (t[k] - t[k + "_q"]) / (n - n // 4) for k in ("local", "up")}
    overhead = marginal["up"] / marginal["local"] - 1
    verdict = "met" if overhead <= GOAL_OVERHEAD else "missed"
    return (f"| {name} | {n / t['local']:.1f} | {n / t['cold']:.1f} | {n / t['up']:.1f} | "
            f"{1 / marginal['local']:.1f} | {1 / marginal['up']:.1f} | {overhead:+.0%} ({verdict}) | "
            f"{t['cold'] / t['local'] - 1:+.0%} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, metavar="M", help="30-s files (default 40; 20 with --quick)")
    p.add_argument("--repeats", type=int, metavar="R", help="timed runs per figure (default 3; 1 with --quick)")
    p.add_argument("--batch-size", type=int, metavar="B", help="files per actor call (default: the engine's)")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    n = args.files or (20 if args.quick else 40)
    repeats = args.repeats or (1 if args.quick else 3)
    print("## Ray engine (models/cluster.py)\n")
    if importlib.util.find_spec("ray") is None:
        print("Not measured: Ray is not installed (`make cluster`).")
        return 0
    if n < 8:
        p.error("--files must be at least 8")
    from models.cluster import BATCH_SIZE, CPUS_PER_ACTOR
    from models.engine import Spec

    batch = args.batch_size or BATCH_SIZE
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_dir = train_svm(tmp)
        files = sorted(synth.write_dataset(tmp / "many", n_per_class=-(-n // len(synth.GENRES)),
                                           duration=30.0).glob("*/*.wav"))[:n]
        specs = {"svm (tiny run)": Spec((str(run_dir),), str(run_dir.parents[2]))}
        if importlib.util.find_spec("musicnn"):
            specs["musicnn tags"] = Spec((), str(tmp / "runs"), tags=True, top=5)
        results = {name: bench_spec(spec, files, repeats, batch) for name, spec in specs.items()}
        init_s, shutdown_s = startup()
    print(f"`python bench/bench_cluster.py --files {n} --repeats {repeats} --batch-size {batch}`: {n} synthetic "
          f"30-s files; local engine with jobs={usable_cpus()} (usable cores), Ray local with {RAY_CPUS} CPUs "
          f"(actors of {CPUS_PER_ACTOR} CPU, batches of {batch} files). Files/s; medians of {repeats}.\n")
    print("| model | local | Ray cold | Ray up | local, marginal | Ray, marginal | Ray's overhead, marginal "
          f"(goal <= {GOAL_OVERHEAD:.0%}) | Ray cold vs local, whole run |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, t in results.items():
        print(row(name, n, t))
    print(f"\nLocal Ray of {RAY_CPUS} CPUs: `ray.init` {init_s:.1f} s, `ray.shutdown` {shutdown_s:.1f} s. "
          f"'Ray cold' includes them, 'Ray up' its actors' start (a process each, imports, the model "
          f"loaded); 'marginal' is 3M/4 / (t(M) - t(M/4)), start-up cancelled; overhead: Ray's time per file over "
          f"the local engine's, minus 1.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
