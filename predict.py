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
object is ``{"file", "genre", "top": [{"genre", "probability" (or "score")}], "model", "duration_s"}``,
with ``model`` the run folder relative to the runs root (a list of them with ``--ensemble``) and
``genre`` the top genre, or ``unknown`` when its probability is under ``--min-probability``, or
``silent`` (``{"genre": "silent", "silent": true, "peak_dbfs"}``, no ``top``) for a file whose loudest
sample is under -60 dBFS. ``--segments [SECONDS]`` adds ``"segments": [{"start_s", "end_s", "top"}]``:
consecutive parts of about SECONDS (default 3), each a whole number of the model's finest parts (a
backbone patch for ``best``, a window for the others); ``--plot DIR`` draws them per file
(``evaluation.timeline``).

Tags
----
``--write-tags`` writes each file's predicted genre into its own tags (``features.tags``: a copy
renamed over the file when complete, every other tag and the audio kept), a dry run without
``--yes``; the record gains ``"tag": {"action", "before", "after", "note"}``. What is written, a
person's genre kept and the provenance that makes ``--undo`` possible: ``models.tagging``.
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

from features import tags, usable_cpus
from features.dataset import AUDIO_EXTENSIONS
from features.tags import MutagenMissing, TagError
from models import cluster, runs, tagging
from models.engine import Classifier, Spec, classify, display
from models.inference import UsageError
from models.resultlog import ResultLog, ResultLogError, file_key
from models.tagging import TAG_MIN_PROBABILITY


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
            self.say("\n".join([obj["file"]] + self._text(obj)), sys.stdout)

    def _text(self, obj: dict) -> list:
        """The lines under a file's name: its genres (or silence), then its segments."""
        if obj.get("silent"):
            peak = "no sound at all" if obj["peak_dbfs"] is None else f"peak {obj['peak_dbfs']:g} dBFS"
            return [f"  silent ({peak})"]
        label = "score " if self.key == "score" else ""
        lines = ["  unknown (no genre is probable enough):"] if obj.get("genre") == "unknown" else []
        lines += [f"  {t[self.item]:<{self.width}}  {label}{t[self.key]:.3f}" for t in obj["top"]]
        for seg in obj.get("segments", ()):
            best = seg["top"][0]
            lines.append(f"    {clock(seg['start_s'])}-{clock(seg['end_s'])}  {best[self.item]:<{self.width}}  "
                         f"{label}{best[self.key]:.3f}")
        if "tag" in obj:
            lines.append(f"  tag: {obj['tag'].get('note', 'not written (the error is above)')}")
        return lines

    def close(self) -> None:
        if self.fmt == "json":
            self.say(json.dumps(self.done, indent=1), sys.stdout)


def clock(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour), as a player shows a position."""
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


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
    _tag_options(p)
    args = p.parse_args(_segments_flag(sys.argv[1:] if argv is None else list(argv)))
    _check_tag_options(p, args)
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


def _number(text: str, ok, problem: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"{text}: {problem}")
    return value


def _probability(text: str) -> float:
    return _number(text, lambda v: 0 <= v <= 1, "a probability is between 0 and 1")


def _seconds(text: str) -> float:
    return _number(text, lambda v: 0 < v < float("inf"), "seconds must be a positive number")


def _segments_flag(argv: list) -> list:
    """``--segments`` not followed by a number is the flag alone (3 s): ``--segments song.mp3`` names a file."""
    out = []
    for i, a in enumerate(argv):
        following = argv[i + 1] if i + 1 < len(argv) else ""
        if a == "--":
            return out + argv[i:]
        out.append("--segments=3" if a == "--segments" and not re.fullmatch(r"[0-9.]+(e[-+]?\d+)?", following) else a)
    return out


def _tag_options(p) -> None:
    p.add_argument("--min-probability", type=_probability, metavar="P", help="genre 'unknown' when the top "
                   f"probability is below P (default: off; {TAG_MIN_PROBABILITY:g} with --write-tags)")
    p.add_argument("--segments", type=_seconds, nargs="?", const=3.0, metavar="SECONDS",
                   help="also the genres of each segment of about SECONDS (default 3: musicnn's patch)")
    p.add_argument("--plot", metavar="DIR", help="a genre-over-time picture per file into DIR (implies --segments)")
    t = p.add_argument_group("tags", "the genre into each file's own tags (`make tags` installs mutagen)")
    t.add_argument("--write-tags", action="store_true", help="show, per file, its genre field as it is and as "
                   "it would be; with --yes, write it")
    t.add_argument("--undo", action="store_true", help="put back the genre field of files this tool tagged, "
                   "as it was before (a dry run without --yes); classifies nothing")
    t.add_argument("--yes", action="store_true", help="really write (else a dry run: nothing changes)")
    t.add_argument("--overwrite", action="store_true", help="replace a genre set by hand (kept by default)")
    t.add_argument("--genres", type=int, default=1, metavar="K", help="write up to K genres, each with "
                   "probability >= --min-probability (default 1)")
    t.add_argument("--id3v23", action="store_true", help="ID3v2.3 (several genres joined by '; ') for a file "
                   "without an ID3 tag yet; an existing tag keeps its version")
    t.add_argument("--keep-mtime", action="store_true", help="keep each file's modification time")


def _check_tag_options(p, args) -> None:
    if (args.yes or args.id3v23 or args.keep_mtime) and not (args.write_tags or args.undo):
        p.error("--yes, --id3v23 and --keep-mtime need --write-tags or --undo")
    if (args.overwrite or args.genres != 1) and not args.write_tags:
        p.error("--overwrite and --genres need --write-tags")
    if args.genres < 1:
        p.error("--genres must be at least 1")
    if args.write_tags and args.undo:
        p.error("--write-tags and --undo: choose one")
    if args.write_tags and (args.tags or args.out_dir):
        p.error("--write-tags writes genres from the records here: no --tags or --out-dir with it")
    if args.write_tags and args.min_probability is None:
        args.min_probability = TAG_MIN_PROBABILITY
    if args.plot and args.segments is None:
        args.segments = 3.0


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
    spec = Spec(tuple(map(str, run_dirs)), str(runs_root), args.tags, args.top, args.device, args.segments,
                args.min_probability)
    classifier = Classifier(spec, note=_note)
    if classifier.predictor.kind == "score" and args.min_probability is not None:
        raise UsageError(f"{classifier.predictor.names[0]} gives decision scores, not probabilities: "
                         f"--min-probability and --write-tags need another model (best, say)")
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


class Extras:
    """What ``--write-tags`` and ``--plot`` do with a file's record before it is printed and logged."""

    def __init__(self, args, classifier, say):
        self.args, self.classifier, self.say = args, classifier, say
        self.writer = None
        if args.write_tags:
            self.writer = tagging.Writer(_tags_module(), args.yes, args.id3v23, args.keep_mtime)
        self.pictures, self.folders = set(), set()

    def __call__(self, path: Path, record: dict) -> dict:
        if self.writer is not None:
            record = self._tag(path, record)
        if self.args.plot and "segments" in record:
            self._plot(record)
        return record

    def _tag(self, path: Path, record: dict) -> dict:
        if "error" in record:
            return record
        a = self.args
        if a.yes and path.parent not in self.folders:  # our copies that a killed run left behind
            self.folders.add(path.parent)
            tags.remove_stale_temps(path.parent)
        try:
            change = self.writer.write(path, record, self.classifier.model_id, a.genres, a.min_probability, a.overwrite)
        except TagError as err:
            self.writer.failed()
            self.say(f"predict: {display(str(err))}", sys.stderr)
            return {**record, "tag": {"error": display(str(err))}}
        return {**record, "tag": {"action": change.action, "before": list(change.before), "after": list(change.after),
                                  "note": tagging.describe(change)}}

    def _plot(self, record: dict) -> None:
        from evaluation import timeline

        folder = Path(self.args.plot)
        stem = Path(record["file"]).stem or "file"
        name, n = f"{stem}.png", 1
        while name in self.pictures:
            n += 1
            name = f"{stem}-{n}.png"
        self.pictures.add(name)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            timeline.draw(record, folder / name, self.classifier.predictor.classes)
        except OSError as err:
            self.say(f"predict: {display(folder / name)}: not written: {err.strerror or err}", sys.stderr)


def _classify_all(records, keys, output, log, bar, extras) -> None:
    for (path, record), key in zip(records, keys):
        record = extras(path, record)
        output.add(record)
        if log is not None:
            if record.get("tag", {}).get("action") == "write" and extras.args.yes:
                key = file_key(path, extras.classifier.model_id)  # the write changed its size and mtime
            log.add({**{k: v for k, v in record.items() if k != "warnings"}, "key": key})
        if bar is not None:
            bar.update()


def _tags_module():
    """``features.tags`` once mutagen is there; MutagenMissing (one line: how to install it) else."""
    tags.require_mutagen()
    return tags


def undo(args) -> int:
    """``--undo``: the genre field of each file this tool tagged back to what it was; the exit status."""
    say = _printer(None)
    files, ok = gather(args.paths, say)
    writer = tagging.Writer(tags, args.yes, args.id3v23, args.keep_mtime)
    for path in files:
        try:
            change = writer.undo(path)
        except TagError as err:
            writer.failed()
            say(f"predict: {display(str(err))}", sys.stderr)
            continue
        say(f"{display(path)}: {tagging.describe(change)}", sys.stdout)
    print(f"predict: {writer.summary()}", file=sys.stderr)
    return 0 if ok and not writer.counts.get("failed") else 1


def main(argv=None) -> int:
    args = parse_args(argv)
    log = None
    try:
        if args.write_tags or args.undo:
            _tags_module()  # before the model is loaded: the one line that says how to install mutagen
        if args.undo:
            return undo(args)
        if args.engine == "ray":
            cluster.require_ray()  # before the model is loaded: the one line that says how to install it
        classifier = load_classifier(args)
        log = ResultLog(args.out) if args.out else None
        return _run(args, classifier, log)
    except (UsageError, ResultLogError, MutagenMissing) as err:
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
        extras = Extras(args, classifier, say)
        _classify_all(_records(args, classifier, files), keys, output, log, bar, extras)
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
    if extras.writer is not None:
        print(f"predict: {extras.writer.summary()}", file=sys.stderr)
        ok = ok and not extras.writer.counts.get("failed")
    return 0 if ok and not output.counts["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
