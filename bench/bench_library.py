"""Classifying a library: files per second of the batch engine against the file-by-file path.

``python bench/bench_library.py [--quick] [--files N] [--models best,...]`` prints a Markdown section.
It trains tiny ``all`` runs (full-size networks, as ``bench_predict.py`` does), writes N synthetic
30-s files (200; 40 with ``--quick``) and times, in one process with the model loaded once:

- ``sequential``: ``Predictor.classify`` file after file with the float32 backbone, what ``predict.py``
  did before the batch engine (decode, inputs and model one after the other on the calling thread);
- ``sequential, default precision``: the same at this machine's default backbone precision (bfloat16
  where the CPU has bf16 units), to tell the precision's share from the engine's;
- ``engine, --jobs J``: ``models.engine.classify`` with J threads preparing files ahead of the model
  and the backbone scoring several files' patches per pass, at the default precision;

each the best of ``--repeats`` passes, alternated so that the machine's load falls on both; then the
whole ``predict.py FOLDER --out FILE --jobs J`` process (imports and model load included). Goal for
``best``: engine / sequential >= 1.3 (must), >= 2 (goal). ``--seconds 3`` times 3-s files instead
(one patch each: there the engine's passes of several files matter); ``--device cuda`` runs the
networks on the GPU (the GPU figure of the library issue).
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_predict import train_tiny  # noqa: E402
from features import synth, usable_cpus  # noqa: E402


def passes(classifier, files, jobs_list, repeats: int) -> dict:
    """Best wall seconds per mode over ``repeats`` alternated passes."""
    from models import engine

    best, today = {}, float32_copy(classifier)
    for _ in range(repeats):
        for mode, c in (("sequential", today), ("sequential, default precision", classifier)):
            t0 = time.perf_counter()
            for f in files:
                c.predictor.classify(f)
            best[mode] = min(best.get(mode, 1e9), time.perf_counter() - t0)
        for jobs in jobs_list:
            t0 = time.perf_counter()
            for _path, record in engine.classify(classifier, files, jobs):
                assert "error" not in record, record
            key = f"engine, --jobs {jobs}"
            best[key] = min(best.get(key, 1e9), time.perf_counter() - t0)
    return best


def float32_copy(classifier):
    """The same runs with the backbone in float32 (the precision before bfloat16 became the default)."""
    from models import engine, musicnn

    copy = engine.Classifier(classifier.spec)
    for member in copy.predictor.members:
        if getattr(member.score, "embedder", None) is not None:  # a head on the backbone
            member.score.embedder = musicnn.embedder(classifier.spec.device, "float32")
    return copy


def whole_process(runs: Path, model: str, folder: Path, out: Path, jobs: int, device: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "predict.py"), "--runs", str(runs), "--model", model, "--out",
                    str(out), "--jobs", str(jobs), "--device", device, str(folder)], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="40 files, one pass")
    p.add_argument("--files", type=int, help="30-s files (default 200; 40 with --quick)")
    p.add_argument("--models", default="best", help="comma-separated (default best)")
    p.add_argument("--repeats", type=int, help="passes per mode (default 2; 1 with --quick)")
    p.add_argument("--seconds", type=float, default=30.0, help="length of each file (default 30)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--jobs", help="comma-separated --jobs values (default 1 and the usable cores)")
    args = p.parse_args(argv)
    n_files = args.files or (40 if args.quick else 200)
    repeats = args.repeats or (1 if args.quick else 2)
    models = args.models.split(",")
    jobs_list = [int(j) for j in args.jobs.split(",")] if args.jobs else sorted({1, usable_cpus()})
    from models import engine, musicnn, runs as run_store

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = train_tiny(models, tmp)
        folder = synth.write_dataset(tmp / "many", n_per_class=max(1, n_files // len(synth.GENRES)),
                                     duration=args.seconds)
        files = sorted(folder.glob("*/*.wav"))
        for model in models:
            run_dirs = run_store.choose_runs(runs, model, note=lambda line: None)
            classifier = engine.Classifier(engine.Spec(tuple(map(str, run_dirs)), str(runs), device=args.device))
            classifier.predictor.classify(files[0])  # warm-up: numba's cache, the OS file cache
            precision = musicnn.default_precision(args.device)
            times = passes(classifier, files, jobs_list, repeats)
            jobs = jobs_list[-1]
            times[f"predict.py --out, --jobs {jobs}"] = whole_process(runs, model, folder, tmp / "o.jsonl", jobs,
                                                                     args.device)
            rows += [(model, mode, len(files) / s, times["sequential"] / s) for mode, s in times.items()]
    print("## Classifying a library (`bench/bench_library.py`)\n")
    command = " ".join(["python bench/bench_library.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"`{command}`: {len(files)} synthetic {args.seconds:g}-s files, tiny `all` runs (full-size "
          f"networks), {usable_cpus()} usable cores, device {args.device}, best of {repeats} alternated passes; "
          f"the default backbone precision here: {precision}. The whole process includes start-up and the "
          f"model load.\n")
    print("| model | mode | files/s | vs sequential |\n|---|---|---|---|")
    for model, mode, rate, ratio in rows:
        print(f"| {model} | {mode} | {rate:.2f} | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
