"""``make bench``: run every bench/bench_*.py in one go and write bench/RESULTS.md.

Each script prints a Markdown section; this adds the machine, package versions and date, so the
numbers in RESULTS.md always say where and when they were measured. ``--quick`` is passed on. A script
that prints nothing (bench_gpu.py where there is no CUDA device) leaves its earlier section as it was.
"""

import argparse
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from features.files import atomic_write  # noqa: E402
SCRIPTS = ("bench_mel.py", "bench_features.py", "bench_musicnn.py", "bench_precision.py", "bench_train.py",
           "bench_predict.py", "bench_library.py", "bench_cluster.py", "bench_pool.py", "bench_calibration.py",
           "bench_gpu.py")


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = [f"python {platform.python_version()}"]
    for name in ("numpy", "scipy", "numba", "rocket-fft", "torch", "scikit-learn", "pillow", "soundfile",
                 "librosa", "audioflux"):
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            out.append(f"{name} (not installed)")
    return ", ".join(out)


def merge_sections(path: Path, new: list) -> list:
    """The sections of the existing results file, each replaced by the new one of the same ``## `` title,
    plus the new ones it lacks: ``--only`` reruns refresh their sections and keep the others."""
    title = lambda section: section.split("\n", 1)[0]  # noqa: E731
    fresh = {title(s): s for s in new}
    old = path.read_text().split("\n## ")[1:] if path.exists() else []
    kept = [fresh.pop(title("## " + s), "## " + s.rstrip()) for s in old]
    return kept + list(fresh.values())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer repeats and clips")
    p.add_argument("--only", help="comma-separated script names (default: all)")
    p.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = p.parse_args(argv)
    scripts = args.only.split(",") if args.only else SCRIPTS
    sections, failed = [], []
    for name in scripts:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, str(HERE / name)] + (["--quick"] if args.quick else [])
        r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=HERE.parent)
        if r.returncode:
            failed.append(name)
        sections.append(r.stdout.strip())
    date = datetime.date.today().isoformat()
    command = f"python bench/run.py{' --quick' if args.quick else ''}{' --only ' + args.only if args.only else ''}"
    header = (f"# Benchmark results\n\nSections written by `make bench` (`python bench/run.py`); each section "
              f"says when it was last measured (the latest: `{command}` on {date}).\n\n"
              f"- Machine: {machine()}\n- Versions: {versions()}\n"
              "- Shared 2-core machine: compare the ratios within one run, not absolute times across runs.\n")
    dated = [f"{s}\n\n(Measured {date} by `{command}`.)" for s in sections if s]
    text = "\n\n".join([header] + merge_sections(Path(args.out), dated)) + "\n"
    if failed:
        print(f"bench: {', '.join(failed)} failed; {args.out} not written", file=sys.stderr)
        return 1
    atomic_write(args.out, lambda f: f.write(text.encode()))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
