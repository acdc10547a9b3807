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
import json
import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np

from features.dataset import AUDIO_EXTENSIONS
from models import runs
from models.inference import FileError, Predictor, Result, Tagger, UsageError, load_member

CONVERT_HINT = "convert it to .wav or .flac first, e.g. `ffmpeg -i IN OUT.wav`"


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

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def display(text) -> str:
    """``text`` (a path or message) as printable UTF-8 on one line: bytes that are not UTF-8 and control
    characters as ``\\xNN`` (the module docstring).

    A name that is not UTF-8 reaches Python as surrogates (``os.fsdecode``), which a UTF-8 stream
    refuses with a UnicodeEncodeError; escaping them keeps the rest of the name readable.
    """
    text = os.fsencode(text).decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


class Output:
    """Writes each file's result in the chosen format (text, ``json`` or ``jsonl``)."""

    def __init__(self, fmt: str, top: int, predictor, say):
        self.fmt, self.predictor, self.say, self.done = fmt, predictor, say, []
        self.top = max(1, min(top, len(predictor.classes)))
        names = predictor.names
        self.model = names[0] if len(names) == 1 else names

    def add(self, path: Path, result: Result) -> None:
        order = np.argsort(-result.values, kind="stable")[:self.top]
        key, item = self.predictor.kind, self.predictor.item
        top = [{item: self.predictor.classes[i], key: round(float(result.values[i]), 6)} for i in order]
        obj = {"file": display(path), "top": top, "model": self.model, "duration_s": round(result.duration_s, 3)}
        if self.fmt == "jsonl":
            self.say(json.dumps(obj), sys.stdout)
        elif self.fmt == "json":
            self.done.append(obj)
        else:
            width = max(len(c) for c in self.predictor.classes)
            label = "score " if key == "score" else ""
            self.say("\n".join([display(path)] + [f"  {t[item]:<{width}}  {label}{t[key]:.3f}" for t in top]),
                     sys.stdout)

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
    args = p.parse_args(argv)
    if args.top is not None and args.top < 1:
        p.error("--top must be at least 1")
    args.top = args.top or (5 if args.tags else 3)
    if args.run and (args.model or args.data or args.ensemble):
        p.error("--run names one run folder: no --model, --data or --ensemble with it")
    if args.tags and (args.run or args.model or args.data or args.ensemble):
        p.error("--tags reads no run: no --run, --model, --data or --ensemble with it")
    return args


def load_predictor(args):
    """The Predictor of the chosen runs, or the Tagger for ``--tags``; UsageError when there is none."""
    if args.tags:
        return Tagger()
    runs_root = Path(args.runs)
    try:
        run_dirs = [Path(args.run)] if args.run else runs.choose_runs(runs_root, args.model, args.data,
                                                                     args.ensemble, note=_note)
    except runs.NoRun as err:
        raise UsageError(str(err)) from None
    predictor = Predictor([load_member(d, runs_root, note=_note) for d in run_dirs])
    data = predictor.members[0].config.get("data") or {}
    if data.get("synthetic") or data.get("data_name") == "synthetic":
        print(f"predict: warning: {predictor.members[0].name} was trained on the synthetic genre set; "
              f"its predictions mean nothing for real music", file=sys.stderr)
    return predictor


def _note(line: str) -> None:
    print(f"predict: note: {line}", file=sys.stderr)


def _classify_all(files, predictor, output, say) -> bool:
    """Classify each file in turn; True when every one was."""
    from features.audio import AudioError

    ok = True
    for path in files:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                output.add(path, predictor.classify(path))
            except (FileError, ValueError) as err:  # AudioError is a ValueError; so are samples mel_db refuses
                problem = ' '.join(str(err.problem if isinstance(err, AudioError) else err).split())
                unreadable = problem.startswith(("not a recognised audio format", "cannot open as audio"))
                # display the whole line: an OSError's text may hold the name too
                say(f"predict: {display(f'{path}: {problem}')}" + (f"; {CONVERT_HINT}" if unreadable else ""),
                    sys.stderr)
                ok = False
        for w in caught:
            say(f"predict: warning: {display(' '.join(str(w.message).split()))}", sys.stderr)
    return ok


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        predictor = load_predictor(args)
    except UsageError as err:
        print(f"predict: {err}", file=sys.stderr)
        return 2
    bar = None
    if any(Path(p).is_dir() for p in args.paths):
        from tqdm import tqdm

        bar = tqdm(total=0, unit="file", file=sys.stderr, disable=None, dynamic_ncols=True)
    say = _printer(bar)
    files, ok = gather(args.paths, say)
    output = Output(args.fmt, args.top, predictor, say)
    if bar is not None:
        bar.total = len(files)
    try:
        ok = _classify_all(_counted(files, bar), predictor, output, say) and ok
        output.close()
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        sys.stdout = open(os.devnull, "w")
        return 1
    finally:
        if bar is not None:
            bar.close()
    return 0 if ok else 1


def _counted(files, bar):
    for f in files:
        yield f
        if bar is not None:
            bar.update()


if __name__ == "__main__":
    sys.exit(main())
