"""Predicted genres into the files' own tags: what to write for a file, and how to take it back.

``features.tags`` writes a genre field safely (a copy beside the file, renamed over it when complete;
every other tag and the audio kept). This module decides *what* goes in:

- the genres of a record (``genres_for``): its top ``k`` whose probability is at least ``min_probability``
  (the first one included, else the file is ``unknown`` and is not tagged; silent files neither);
  GTZAN's folder names become the names players use (``hiphop`` -> ``Hip-Hop``);
- a provenance field beside the genre (``features.tags.SOURCE_KEY``): a JSON object naming the tool,
  model, runs' identity, the probabilities, and the genre field as it was before (``previous``). So a
  rerun recognises its own tags (and replaces them with a newer prediction), never a person's (a genre
  without our provenance, or changed since we wrote it, is kept unless ``overwrite``), and ``undo``
  restores the field as it was, from the file alone: no journal to lose.

``plan`` and ``plan_undo`` only read; ``apply`` writes a planned change.
"""

import collections
import datetime
import json
from typing import NamedTuple

TOOL = "gtzan-genre"
# --write-tags leaves a file untagged ("unknown") under this top probability: the smallest threshold whose
# tagged files are >= 90 % right in best's pool CV (bench/bench_calibration.py: 82.6 % of 408 held-out real
# files tagged, 90.2 % of them right; at 0.5, 89.5 % tagged and 87.9 % right): a wrong genre written into a
# file costs its owner more than a missing one.
TAG_MIN_PROBABILITY = 0.6
# GTZAN's folder names as the genre names of ID3's list and of players; other labels are written as they are.
DISPLAY = {"blues": "Blues", "classical": "Classical", "country": "Country", "disco": "Disco",
           "hiphop": "Hip-Hop", "jazz": "Jazz", "metal": "Metal", "pop": "Pop", "reggae": "Reggae", "rock": "Rock"}


class Change(NamedTuple):
    """What happens to one file's genre field."""

    path: object
    before: tuple  # the genre values now
    after: tuple  # the genre values it will hold (== before when nothing is written)
    source: str  # the provenance to write (None: remove ours)
    action: str  # "write", "same", "keep" (a person's genre), "skip" (unknown or silent), "undo", "none"
    why: str = ""  # for keep / skip / none: the reason, shown to the user


def genres_for(record: dict, k: int, min_probability: float) -> tuple:
    """The genre names to write for a record of ``predict``: () when unknown, silent or an error."""
    if record.get("genre") in (None, "unknown", "silent") or "top" not in record:
        return ()
    top = [t for t in record["top"][:k] if t.get("probability", 0.0) >= min_probability]
    return tuple(DISPLAY.get(t["genre"], t["genre"]) for t in top)


def ours(source) -> dict:
    """Our provenance object from a file's provenance field, or None (absent, or not ours)."""
    try:
        obj = json.loads(source) if source else None
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and obj.get("tool") == TOOL else None


def provenance(record: dict, model_id: str, genres: tuple, previous: tuple) -> str:
    """The provenance field's value: compact JSON, one line."""
    probs = {t["genre"]: t["probability"] for t in record["top"]}
    inverse = {v: k for k, v in DISPLAY.items()}
    return json.dumps({"tool": TOOL, "model": record["model"], "run": model_id, "genres": list(genres),
                       "probabilities": [probs[inverse.get(g, g)] for g in genres], "previous": list(previous),
                       "date": datetime.date.today().isoformat()}, separators=(",", ":"))


def _values(genres) -> tuple:
    """Genre values compared as written: ID3v2.3 stores several joined by ``"; "`` as one value."""
    return tuple(x for v in genres for x in v.split("; "))


def plan(path, record: dict, current, model_id: str, k: int, min_probability: float,
         overwrite: bool) -> Change:
    """The change ``--write-tags`` makes to one file, given its ``current`` ``features.tags.Genre``."""
    before, mine = tuple(current.genres), ours(current.source)
    genres = genres_for(record, k, min_probability)
    if not genres:
        why = record.get("genre", "error")
        if why == "unknown":
            why = f"unknown: top probability {record['top'][0]['probability']:.2f} < {min_probability:g}"
        return Change(path, before, before, current.source, "skip", why)
    own = mine is not None and _values(mine.get("genres", ())) == _values(before)
    if before and not own and not overwrite:
        why = "changed by hand since we wrote it" if mine else "set by hand"
        return Change(path, before, before, current.source, "keep", f"{why}; --overwrite replaces it")
    previous = tuple(mine.get("previous", ())) if own else before
    action = "same" if own and _values(before) == genres else "write"
    return Change(path, before, genres, provenance(record, model_id, genres, previous), action)


def plan_undo(path, current) -> Change:
    """The change ``--undo`` makes: our genre back to the field as it was before we wrote it."""
    before, mine = tuple(current.genres), ours(current.source)
    if mine is None:
        return Change(path, before, before, current.source, "none", "no genre written by this tool")
    if _values(mine.get("genres", ())) != _values(before):
        return Change(path, before, before, current.source, "keep",
                      "its genre was changed since we wrote it; left as it is")
    return Change(path, before, tuple(mine.get("previous", ())), None, "undo")


def apply(change: Change, tags, id3v23: bool, keep_mtime: bool) -> None:
    """Write a planned change through ``tags`` (``features.tags``); TagError (one line) when it cannot."""
    if change.action in ("write", "undo"):
        tags.write_genre(change.path, change.after, change.source, id3v23=id3v23, keep_mtime=keep_mtime)


def describe(change: Change) -> str:
    """``"Rock" -> "Blues; Jazz"`` and why, for the dry run and the log."""
    def field(values):
        return "; ".join(f'"{v}"' for v in values) if values else "(none)"

    if change.action in ("write", "undo"):
        return f"{field(change.before)} -> {field(change.after)}"
    if change.action == "same":
        return f"{field(change.before)} (already written)"
    if change.action == "skip":
        return f"{field(change.before)} (not tagged: {change.why})"
    return f"{field(change.before)} (kept: {change.why})"


class Writer:
    """``--write-tags`` and ``--undo`` file by file: plan, say, and (with ``yes``) write; counts per action.

    ``tags`` is ``features.tags`` (mutagen imported by the caller, so that its absence is said once).
    """

    def __init__(self, tags, yes: bool, id3v23: bool = False, keep_mtime: bool = False):
        self.tags, self.yes, self.id3v23, self.keep_mtime = tags, yes, id3v23, keep_mtime
        self.counts = collections.Counter()

    def write(self, path, record: dict, model_id: str, k: int, min_probability: float, overwrite: bool) -> Change:
        """Plan (and write) one classified file's genre; TagError when it cannot be read or written."""
        change = plan(path, record, self.tags.read_genre(path), model_id, k, min_probability, overwrite)
        return self._done(change)

    def undo(self, path) -> Change:
        return self._done(plan_undo(path, self.tags.read_genre(path)))

    def failed(self) -> None:
        self.counts["failed"] += 1

    def _done(self, change: Change) -> Change:
        if self.yes:
            apply(change, self.tags, self.id3v23, self.keep_mtime)
        self.counts[change.action] += 1
        return change

    def summary(self) -> str:
        """One line: what was (or, in a dry run, would be) done."""
        names = {"write": "written", "undo": "restored", "same": "already written", "keep": "kept (set by hand)",
                 "skip": "not tagged (unknown or silent)", "none": "not ours", "failed": "failed"}
        if not self.yes:
            names.update(write="to write", undo="to restore")
        done = ", ".join(f"{n} {names[a]}" for a, n in self.counts.items() if n) or "no files"
        return f"tags: {done}" + ("" if self.yes else "; a dry run: nothing was written (add --yes to write)")
