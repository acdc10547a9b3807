"""Classify audio files with a trained run: ``python predict.py PATH [PATH ...]``.

A PATH is a file (classified whatever its name: libsndfile identifies the content) or a folder,
searched recursively for files with an audio extension (``features.dataset.AUDIO_EXTENSIONS``, any
case; hidden files, other files and symlink loops are skipped silently). Names beginning with a dash
follow ``--``: ``python predict.py -- -x.wav``. A PATH that is not a regular file (a FIFO, ``/dev/zero``,
a broken symlink) is refused in one line without being opened, so nothing blocks; a symlink to an audio
file is that file.

Which model
-----------
``--model NAME`` (default ``best``) picks the model's ``all`` run (trained on every clip) when there is
one, else its newest complete run; without ``--model`` and with no ``best`` run, the newest complete
run of any model. ``--ensemble`` averages every complete run of the model instead (seeds, folds).
``--run DIR`` names one run folder; ``--runs DIR`` is the root (default ``runs/``) and ``--data NAME``
chooses its data set when it holds several. A run folder is all prediction needs: its
``config.json`` (classes, feature settings and their fingerprint, model settings) and its weights
(``model.pt``, read with ``torch.load(weights_only=True)``, which runs no code; or ``svm.npz`` or
``head.npz``, read without pickles), plus, for ``best``, the pretrained musicnn weights of the
installed ``musicnn`` package. A run whose feature fingerprint differs from this code's (other
feature settings, or other musicnn weights) is refused with the command that retrains it.

``--tags`` prints musicnn's own 50 Million Song Dataset tags instead (``rock``, ``female vocalists``,
``80s``, ...: the mean of each tag's probability over the file's 3-s patches; the tags are independent
sigmoids and do not sum to 1). It needs no trained run.

Windows
-------
Audio is decoded block by block (``features.audio.stream``: any rate, channels and length, in bounded
memory) into the run's rate and cut into consecutive windows of the run's duration (30 s):

- models read one window, as in training: a file of up to 30 s is one window, zero-padded as the
  cache pads it; past the last full window, a rest of at least ``MIN_SECONDS`` (1 s) makes one more
  window that ends at the file's end (overlapping the one before, so no window of a long file holds
  padding); a shorter rest is dropped, as the cache keeps the first 30 s of GTZAN's 30.37-s clips.
  The file's log-probabilities are the mean over its windows, renormalised (SVM: mean scores);
- a model with ``clip_log_probs`` (``models/patchcnn.py``) scores the dB mel of each consecutive 30-s
  block with its true valid frame count (a last block of at least 1 s is zero-padded, its padding not
  counted), and the blocks are averaged weighted by their valid frames, so the result is the mean
  over the file's patches up to the rounding at block ends;
- ``best`` (``models/best.py``) cuts the audio of each consecutive 30-s block (its padding left out)
  into musicnn's 3-s patches, as the cache does, and scores the mean of their backbone features; the
  blocks are averaged weighted by their patch counts.

``--ensemble`` averages the runs' file-level log-probabilities (SVM: scores) and renormalises. Files
shorter than 1 s are refused.

Output
------
Text: per file its path, then one line per genre, best first (``genre  probability``; the SVM's
lines read ``genre  score S``), ``--top K`` of them (default 3, at most the class count).
``--json``: one JSON list at the end; ``--jsonl``: one object per line as each file finishes. Each
object is ``{"file", "top": [{"genre", "probability" (or "score")}], "model", "duration_s"}``, with
``model`` the run folder relative to the runs root (a list of them with ``--ensemble``).
A file name is printed (text, JSON and error lines alike) with each byte that is not UTF-8 as ``\\xNN``
and each control character (a newline, say) as ``\\xNN`` too, so every output line is valid UTF-8 and a
name never breaks a line; other names, spaces and all, print as they are.
Errors go to stderr, one line per file, and the other files go on. Exit status: 0 when every file
was classified, 1 when any failed (or a folder held no audio), 2 on a usage error or no usable model.
"""

import argparse
import collections
import hashlib
import json
import os
import re
import sys
from pathlib import Path

from features import usable_cpus
from features.dataset import AUDIO_EXTENSIONS
from models import cluster, runs
from models.engine import Classifier, Spec, classify, display
from models.inference import UsageError
from models.resultlog import ResultLog, ResultLogError, file_key


# ------------------------------------------------------------------------------------------ inputs

def audio_files(folder: Path) -> list:
    """Files with an audio extension under ``folder``, recursively and sorted, each folder once.

    Symlinked folders are followed, but a folder already seen (by device and inode) is not entered
    again, so a symlink loop ends. Hidden files and folders (``.x``, ``._x.wav`` resource forks) are
    left out.
    """
    seen, found = set(), []
    for root, dirs, files in os.walk(folder, followlinks=True):
        try:
            st = os.stat(root)
        except OSError:
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root, f) for f in sorted(files)
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in AUDIO_EXTENSIONS]
    return found


def gather(paths: list, say) -> tuple:
    """(files to classify, whether every PATH was usable); a PATH that is not is reported through ``say``."""
    files, ok = [], True
    for p in map(Path, paths):
        if p.is_dir():
            found = audio_files(p)
            if not found:
                say(f"predict: {display(p)}: no audio files ({' '.join(AUDIO_EXTENSIONS)}) in this folder",
                    sys.stderr)
                ok = False
            files += found
        else:
            files.append(p)  # a missing or special file is refused when it is read, in its turn
    return files, ok


# ------------------------------------------------------------------------------------------ output

class Output:
    """Writes each file's record in the chosen format (text, ``json`` or ``jsonl``); errors and
    warnings go to stderr, one line each."""

    def __init__(self, fmt: str, classifier, say):
        self.fmt, self.say, self.done = fmt, say, []
        predictor = classifier.predictor
        self.key, self.item, self.width = predictor.kind, predictor.item, max(len(c) for c in predictor.classes)
        self.counts = collections.Counter()

    def add(self, record: dict) -> None:
        if "error" in record:
            self.say(f"predict: {record['error']}", sys.stderr)
            self.counts["failed"] += 1
        else:
            self._result({k: v for k, v in record.items() if k != "warnings"})
            self.counts["classified"] += 1
        for warning in record.get("warnings", ()):
            self.say(f"predict: warning: {warning}", sys.stderr)

    def _result(self, obj: dict) -> None:
        if self.fmt == "jsonl":
            self.say(json.dumps(obj), sys.stdout)
        elif self.fmt == "json":
            self.done.append(obj)
        else:
            label = "score " if self.key == "score" else ""
            self.say("\n".join([obj["file"]] + [f"  {t[self.item]:<{self.width}}  {label}{t[self.key]:.3f}"
                                                for t in obj["top"]]), sys.stdout)

    def close(self) -> None:
        if self.fmt == "json":
            self.say(json.dumps(self.done, indent=1), sys.stdout)


def _printer(bar):
    """``say(text, stream)``: a flushed line that leaves the progress bar (when there is one) intact."""
    def say(text, stream):
        if bar is not None:
            bar.write(text, file=stream)
        else:
            print(text, file=stream)
        stream.flush()

    return say


# ------------------------------------------------------------------------------------------ main

def _shard(text: str) -> tuple:
    """``k/N`` -> (k, N) with 1 <= k <= N."""
    m = re.fullmatch(r"(\d+)/(\d+)", text)
    if not m or not 1 <= int(m[1]) <= int(m[2]):
        raise argparse.ArgumentTypeError(f"{text!r}: expected k/N with 1 <= k <= N, e.g. 1/4")
    return int(m[1]), int(m[2])


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="exit status: 0 all classified, "
                                "1 a file failed, 2 usage error or no usable model")
    p.add_argument("paths", nargs="+", metavar="PATH", help="audio file or folder (searched recursively)")
    p.add_argument("--top", type=int, metavar="K", help="genres (tags) shown per file (default 3; 5 with --tags)")
    p.add_argument("--model", metavar="NAME", help="model name (default best, else the newest run)")
    p.add_argument("--run", metavar="DIR", help="one run folder <runs>/<data>/<model>/<split>-<preset>-seed<k>")
    p.add_argument("--runs", default="runs", metavar="DIR", help="run folders root (default runs/)")
    p.add_argument("--data", metavar="NAME", help="data set under --runs, when it holds several")
    p.add_argument("--ensemble", action="store_true", help="average every complete run of the model")
    p.add_argument("--tags", action="store_true", help="musicnn's 50 Million Song Dataset tags instead of "
                   "genres (no trained run needed)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", dest="fmt", action="store_const", const="json", help="one JSON list on stdout")
    fmt.add_argument("--jsonl", dest="fmt", action="store_const", const="jsonl",
                     help="one JSON object per line, as each file finishes")
    p.add_argument("--out", metavar="FILE.jsonl", help="also append one line per file to FILE (resumable: "
                   "a rerun skips the files already there for the same model)")
    p.add_argument("--retry-errors", action="store_true", help="with --out: classify again the files whose "
                   "line is an error")
    p.add_argument("--shard", type=_shard, metavar="k/N", help="only the k-th of N deterministic parts of "
                   "the files (by a hash of their path), for N machines or jobs")
    p.add_argument("--jobs", type=int, metavar="N", help="threads preparing files ahead of the model "
                   "(default: usable cores)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the networks run (default auto: CUDA when there is a GPU)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="ray: the same classification on a Ray cluster (`make cluster` installs Ray)")
    p.add_argument("--address", metavar="ADDR", help="with --engine ray: auto (this node's cluster) or "
                   "HOST:PORT of its head; default: a local Ray on this machine's cores")
    p.add_argument("--out-dir", metavar="DIR", help="with --engine ray: the workers write the --out lines "
                   "as shards DIR/*.jsonl themselves (resumable: a rerun skips the files in them)")
    args = p.parse_args(argv)
    if args.engine != "ray" and (args.address or args.out_dir):
        p.error("--address and --out-dir need --engine ray")
    if args.out_dir and args.out:
        p.error("--out-dir and --out: choose one")
    if args.engine == "ray" and args.jobs:
        p.error("--jobs is for --engine local: Ray sizes its actors from the cluster")
    if args.retry_errors and not (args.out or args.out_dir):
        p.error("--retry-errors needs --out or --out-dir")
    if args.top is not None and args.top < 1:
        p.error("--top must be at least 1")
    if args.jobs is not None and args.jobs < 1:
        p.error("--jobs must be at least 1")
    args.top = args.top or (5 if args.tags else 3)
    if args.run and (args.model or args.data or args.ensemble):
        p.error("--run names one run folder: no --model, --data or --ensemble with it")
    if args.tags and (args.run or args.model or args.data or args.ensemble):
        p.error("--tags reads no run: no --run, --model, --data or --ensemble with it")
    return args


def _note(line: str) -> None:
    print(f"predict: note: {line}", file=sys.stderr)


def load_classifier(args) -> Classifier:
    """The Classifier of the chosen runs, or of the tagger for ``--tags``; UsageError when there is none."""
    runs_root = Path(args.runs)
    run_dirs = ()
    if not args.tags:
        try:
            run_dirs = [Path(args.run)] if args.run else runs.choose_runs(runs_root, args.model, args.data,
                                                                         args.ensemble, note=_note)
        except runs.NoRun as err:
            raise UsageError(str(err)) from None
    spec = Spec(tuple(map(str, run_dirs)), str(runs_root), args.tags, args.top, args.device)
    classifier = Classifier(spec, note=_note)
    data = {} if args.tags else classifier.predictor.members[0].config.get("data") or {}
    if data.get("synthetic") or data.get("data_name") == "synthetic":
        print(f"predict: warning: {classifier.predictor.names[0]} was trained on the synthetic genre set; "
              f"its predictions mean nothing for real music", file=sys.stderr)
    return classifier


def _to_do(files, args, classifier, log) -> tuple:
    """(files to classify, their resume keys, how many were skipped as already in ``--out`` or ``--out-dir``)."""
    if args.shard:
        k, n = args.shard
        files = [f for f in files if int(hashlib.sha256(os.fsencode(f)).hexdigest()[:15], 16) % n == k - 1]
    if log is None and not args.out_dir:  # nothing to resume from: no key (a stat per file) is needed
        return files, [None] * len(files), 0
    keys = [file_key(f, classifier.model_id) for f in files]
    if log is not None:
        todo = [(f, key) for f, key in zip(files, keys) if not log.answered(display(f), key, args.retry_errors)]
        log.forget(display(f) for f, _ in todo)
    elif args.out_dir:
        done = cluster.done_in(args.out_dir)  # {file and key: whether its line is an error}
        failed = [done.get(cluster.done_key(display(f), key)) for f, key in zip(files, keys)]  # None: not done
        todo = [(f, key) for f, key, state in zip(files, keys, failed)
                if state is None or (state and args.retry_errors)]
    return [f for f, _ in todo], [key for _, key in todo], len(files) - len(todo)


def _records(args, classifier, files):
    """(path, record) of each file, in order, from the chosen engine (none with ``--out-dir``: the
    workers write them)."""
    if args.engine == "ray":
        return cluster.classify(classifier.spec, files, args.address, out_dir=args.out_dir)
    return classify(classifier, files, args.jobs or usable_cpus())


def _classify_all(records, keys, output, log, bar) -> None:
    for (path, record), key in zip(records, keys):
        output.add(record)
        if log is not None:
            log.add({**{k: v for k, v in record.items() if k != "warnings"}, "key": key})
        if bar is not None:
            bar.update()


def main(argv=None) -> int:
    args = parse_args(argv)
    log = None
    try:
        if args.engine == "ray":
            cluster.require_ray()  # before the model is loaded: the one line that says how to install it
        classifier = load_classifier(args)
        log = ResultLog(args.out) if args.out else None
        return _run(args, classifier, log)
    except (UsageError, ResultLogError) as err:
        print(f"predict: {err}", file=sys.stderr)
        return 2
    except cluster.ClusterError as err:
        print(f"predict: {err}", file=sys.stderr)
        return 1
    finally:
        if log is not None:
            log.close()  # after a failed write: what it could, quietly (the line above said it)


def _run(args, classifier, log) -> int:
    """Gather the files, skip those done, classify the rest with a progress bar; the exit status."""
    bar = None
    if (args.out or any(Path(p).is_dir() for p in args.paths)) and not args.out_dir:  # --out-dir: no records here
        from tqdm import tqdm

        bar = tqdm(total=0, unit="file", file=sys.stderr, disable=None, dynamic_ncols=True)
    say = _printer(bar)
    files, ok = gather(args.paths, say)
    files, keys, skipped = _to_do(files, args, classifier, log)
    output = Output(args.fmt, classifier, say)
    if bar is not None:
        bar.total = len(files)
    try:
        _classify_all(_records(args, classifier, files), keys, output, log, bar)
        output.close()
        if log is not None:
            log.sync()
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        sys.stdout = open(os.devnull, "w")
        return 1
    finally:
        if bar is not None:
            bar.close()
    if args.out_dir:
        done = cluster.done_in(args.out_dir)
        failed = sum(done.get(cluster.done_key(display(f), key), True) for f, key in zip(files, keys))
        print(f"predict: {len(files) - failed} classified into {args.out_dir}/*.jsonl, {skipped} skipped as "
              f"already there, {failed} failed", file=sys.stderr)
        return 0 if ok and not failed else 1
    if log is not None:
        print(f"predict: {output.counts['classified']} classified, {skipped} skipped as already in {args.out}, "
              f"{output.counts['failed']} failed", file=sys.stderr)
    return 0 if ok and not output.counts["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
