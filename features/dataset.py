"""Finding GTZAN (or any ``<genre>/<file>`` music folder), listing its tracks, checking it.

Where the data is looked for, first match wins:

1. a path given on the command line (``--data DIR``),
2. ``$GTZAN_DIR``,
3. ``data/gtzan/`` in the repository, else ``data/genres.tar.gz`` (extracted to ``data/gtzan/``).

A given path that does not hold data is an error (it is never silently skipped for the
next one). The path may be

- a folder of genre folders (``<genre>/<file>``),
- a folder holding ``genres/`` (the original archive, ``.au`` or ``.wav``) or
  ``genres_original/`` (the common ``.wav`` copy),
- a ``.tar.gz`` / ``.tgz`` / ``.tar`` archive, safely extracted to a ``gtzan/`` folder beside
  it (once; a later call finds the extracted folder).

Genre folders are the non-hidden subfolders holding at least one audio file (extensions
``AUDIO_EXTENSIONS``, case-insensitive; hidden files, ``._*`` resource forks and nested
folders are ignored; symlinked files count). Their names are the classes, exactly those present
(two or more): GTZAN genre names first, in GTZAN's order, then any other names alphabetically,
numbered 0..n-1. Full GTZAN keeps its numbering 0..9, and a user's own labelled music works the
same way.

Track identity: a file whose name contains a GTZAN id (a genre name, ``.``, five digits, any
case: ``blues.00012.wav``, ``x__blues.00012.wav``) belongs to that track; otherwise its stem is
the track. Several files may share a track (an excerpt and its full clip); splits keep a track's
files together. One track under two labels is an error.

Listing does not decode audio: a file that will not decode (the common ``.wav`` copy's
``jazz.00054.wav``) surfaces as ``features.audio.AudioError`` when the cache reads it.

``validate_main`` (``python -m features validate``) checks per-file MD5s against the
mirdata index of the full collection (``gtzan_index.json``).
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import NamedTuple

GENRES = ("blues", "classical", "country", "disco", "hiphop",
          "jazz", "metal", "pop", "reggae", "rock")
AUDIO_EXTENSIONS = (".au", ".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
GTZAN_ID = re.compile(r"(?<![a-z])(" + "|".join(GENRES) + r")\.(\d{5})(?!\d)", re.IGNORECASE)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / "data" / "gtzan"
DEFAULT_ARCHIVE = REPO / "data" / "genres.tar.gz"
INDEX_PATH = Path(__file__).with_name("gtzan_index.json")

WHERE_TO_PUT = (f"put the GTZAN folder at {DEFAULT_DATA} (or point $GTZAN_DIR or --data at it), "
                f"or the genres.tar.gz at {DEFAULT_ARCHIVE}")


class DataError(ValueError):
    """Data that cannot be found or used; ``str()`` is one line naming the path."""


class Track(NamedTuple):
    """One audio file of the collection."""

    path: Path  # absolute path of the audio file
    relpath: str  # 'blues/blues.00000.wav', relative to the root, '/'-separated
    genre: str  # name of its genre folder
    label: int  # class index of ``genre`` in ``classes(root)``
    track_id: str  # GTZAN id 'blues.00000' found in the file name, else the file's stem


def _visible(p):
    return not p.name.startswith((".", "__MACOSX"))


def _audio_files(folder):
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and _visible(p) and p.suffix.lower() in AUDIO_EXTENSIONS)


def _genre_dirs(root):
    return sorted((d for d in root.iterdir() if d.is_dir() and _visible(d) and _audio_files(d)),
                  key=lambda d: d.name)


def resolve_root(path):
    """The folder of genre folders at or directly under ``path`` (None when there is none).

    Parameters
    ----------
    path : str or Path
        A folder: checked as ``path/genres``, ``path/genres_original``, then ``path``.

    Returns
    -------
    Path or None
    """
    path = Path(path)
    for candidate in (path / "genres", path / "genres_original", path):
        if candidate.is_dir() and _genre_dirs(candidate):
            return candidate
    return None


def _check_member(archive, member):
    name = member.name
    if (name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute()
            or PureWindowsPath(name).drive):
        raise DataError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        raise DataError(f"{archive}: member {name!r} climbs out with '..'; refusing to extract")


def extract_archive(archive, dest):
    """Safely extract a tar archive into a new folder, all or nothing.

    Members with absolute paths or ``..`` components are refused outright, and the rest goes
    through tarfile's ``filter='data'`` (no links out of the tree, no devices, no setuid).
    Extraction happens in a temporary sibling folder renamed to ``dest`` only when complete.

    Parameters
    ----------
    archive : str or Path
        ``.tar``, ``.tar.gz`` / ``.tgz`` (any compression tarfile reads).
    dest : str or Path
        Folder to create; must not exist yet.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    DataError
        Unreadable or unsafe archive, or ``dest`` already exists.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise DataError(f"{dest}: already exists; not extracting {archive.name} over it")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".extracting", dir=dest.parent))
    except OSError as e:
        raise DataError(f"{dest.parent}: cannot create a folder to extract into ({e.strerror}); "
                        f"copy the archive somewhere writable") from None
    try:
        # One streaming pass: listing the members first would decompress 1.2 GB twice.
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                _check_member(archive, member)
                tar.extract(member, tmp, filter="data")
        os.replace(tmp, dest)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{archive}: cannot extract ({' '.join(str(e).split())})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _from_archive(archive, extract_to):
    dest = Path(extract_to) if extract_to is not None else archive.parent / "gtzan"
    if not dest.exists():
        extract_archive(archive, dest)
    root = resolve_root(dest)
    if root is None:
        raise DataError(f"{dest}: holds no genre folders with audio files "
                        f"(extracted from {archive.name}?)")
    return root


def find_data(data=None, extract_to=None):
    """Locate the collection: ``data`` > ``$GTZAN_DIR`` > ``data/gtzan/`` > ``data/genres.tar.gz``.

    Parameters
    ----------
    data : str or Path, optional
        Folder (of genre folders, or holding ``genres/`` / ``genres_original/``) or tar
        archive, e.g. from ``--data``.
    extract_to : str or Path, optional
        Where an archive is extracted; default ``gtzan/`` beside the archive.

    Returns
    -------
    Path or None
        The folder whose children are the genre folders; None when nothing was given and
        neither default exists.

    Raises
    ------
    DataError
        A given path (``data`` or ``$GTZAN_DIR``), or an existing default, holds no data.
    """
    if data is not None:
        source, origin = Path(data).expanduser(), "the command line"
    elif os.environ.get("GTZAN_DIR"):
        source, origin = Path(os.environ["GTZAN_DIR"]).expanduser(), "$GTZAN_DIR"
    elif DEFAULT_DATA.exists():
        source, origin = DEFAULT_DATA, "the default location"
    elif DEFAULT_ARCHIVE.is_file():
        source, origin = DEFAULT_ARCHIVE, "the default location"
    else:
        return None
    if not source.exists():
        raise DataError(f"{source}: not found (given by {origin})")
    if source.is_file():
        if not source.name.lower().endswith(ARCHIVE_SUFFIXES):
            raise DataError(f"{source}: neither a folder nor a .tar.gz/.tgz/.tar archive")
        return _from_archive(source, extract_to)
    root = resolve_root(source)
    if root is None:
        raise DataError(f"{source}: no genre folders with audio files (expected <genre>/<file>, "
                        f"genres/<genre>/<file> or genres_original/<genre>/<file>)")
    return root


def track_id(relpath):
    """Track of a file: the GTZAN id in its name (lower case), else its stem.

    Parameters
    ----------
    relpath : str
        ``'blues/blues.00012.wav'``, ``'blues/gtzan_2s__Blues.00012.wav'`` or ``'ambient/song.flac'``.

    Returns
    -------
    str
        ``'blues.00012'``, ``'blues.00012'``, ``'song'``.
    """
    name = PurePosixPath(relpath).name
    m = GTZAN_ID.search(name)
    return f"{m[1].lower()}.{m[2]}" if m else PurePosixPath(name).stem


def order_classes(names):
    """Class order: GTZAN genre names in GTZAN's order, then the other names alphabetically."""
    names = set(names)
    return tuple(g for g in GENRES if g in names) + tuple(sorted(names - set(GENRES)))


def classes(root):
    """Class names of a data root, index = label: exactly its genre folders (``order_classes``).

    Returns
    -------
    tuple of str
    """
    return order_classes(d.name for d in _genre_dirs(Path(root)))


def list_tracks(root):
    """All audio files under the genre folders of ``root``, sorted by relpath.

    Parameters
    ----------
    root : str or Path
        A folder of genre folders, e.g. from ``find_data``.

    Returns
    -------
    list of Track
        Sorted by ``relpath`` (GTZAN: by genre, then track number), so by label for GTZAN.

    Raises
    ------
    DataError
        No audio files, or one track id under two labels.
    """
    root = Path(root).resolve()
    names = classes(root)
    tracks, seen = [], {}
    for d in _genre_dirs(root):
        for p in _audio_files(d):
            relpath = f"{d.name}/{p.name}"
            t = Track(p, relpath, d.name, names.index(d.name), track_id(relpath))
            first = seen.setdefault(t.track_id, t)
            if first.genre != t.genre:
                raise DataError(f"{root}: track {t.track_id!r} is under two labels "
                                f"({first.relpath} and {t.relpath}); keep it under one")
            tracks.append(t)
    if not tracks:
        raise DataError(f"{root}: no audio files in genre folders")
    return sorted(tracks, key=lambda t: t.relpath)


def load_index(path=INDEX_PATH):
    """Expected audio files of the full collection from a mirdata-style index.

    Parameters
    ----------
    path : str or Path
        JSON ``{"tracks": {track_id: {"audio": [relpath, md5], ...}}}``.

    Returns
    -------
    dict
        ``track_id -> (relpath 'blues/blues.00000.wav', md5 hex)``.

    Raises
    ------
    DataError
    """
    path = Path(path)
    try:
        tracks = json.loads(path.read_text())["tracks"]
        return {tid: ("/".join(PurePosixPath(t["audio"][0]).parts[-2:]), t["audio"][1].lower())
                for tid, t in tracks.items()}
    except OSError as e:
        raise DataError(f"{path}: cannot read index ({e.strerror})") from None
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise DataError(f"{path}: not a mirdata-style index ({type(e).__name__}: {e})") from None


def md5sum(path):
    """MD5 hex digest of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


class Verification(NamedTuple):
    """Outcome of ``verify``; every field lists relpaths (``missing``: track ids)."""

    verified: list
    mismatched: list  # 'relpath: why' (MD5 differs, or in another genre folder than indexed)
    missing: list  # indexed track ids with no file
    extra: list  # files whose track id is not in the index
    unverifiable: list  # indexed tracks present in a format other than the indexed .wav

    @property
    def ok(self):
        return bool(self.verified) and not (self.mismatched or self.missing or self.extra
                                            or self.unverifiable)


def verify(root, index):
    """Check every track under ``root`` against ``index`` by track id and MD5.

    Parameters
    ----------
    root : str or Path
        Folder of genre folders.
    index : dict
        From ``load_index``.

    Returns
    -------
    Verification
        The index lists ``.wav`` files, so ``.au`` originals (and any other format) cannot
        be checked by MD5 and land in ``unverifiable``, not ``mismatched``.
    """
    v = Verification([], [], [], [], [])
    present = set()
    for t in list_tracks(root):
        if t.track_id not in index:
            v.extra.append(t.relpath)
            continue
        present.add(t.track_id)
        relpath, md5 = index[t.track_id]
        if PurePosixPath(relpath).suffix != PurePosixPath(t.relpath).suffix.lower():
            v.unverifiable.append(t.relpath)
        elif md5sum(t.path) != md5:
            v.mismatched.append(f"{t.relpath}: MD5 differs from the index")
        elif relpath.split("/")[0] != t.genre:
            v.mismatched.append(f"{t.relpath}: the index files it under {relpath}")
        else:
            v.verified.append(t.relpath)
    v.missing.extend(sorted(set(index) - present))
    return v


def _listing(items, limit):
    shown = items if limit is None else items[:limit]
    more = len(items) - len(shown)
    return "".join(f"\n  {s}" for s in shown) + (f"\n  ... and {more} more (--list shows all)"
                                                 if more else "")


def validate_main(argv=None):
    """``python -m features validate [DIR]``: MD5-check a GTZAN copy; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m features validate",
        description="Check a GTZAN copy file by file (MD5, matched by track id) against the "
                    "index of the full collection; report verified, mismatched, missing, extra "
                    "and not-verifiable (.au originals: the index lists .wav) files.",
        epilog="Exit status: 0 every indexed track is present and verified and nothing else is "
               "there; 1 something is missing, mismatched, extra or not verifiable; 2 no data "
               "found, unreadable index or bad arguments.")
    parser.add_argument("data", nargs="?", metavar="DIR",
                        help="GTZAN folder or genres.tar.gz (default: $GTZAN_DIR, then data/gtzan/)")
    parser.add_argument("--index", default=INDEX_PATH, type=Path,
                        help="mirdata-style JSON index (default: %(default)s)")
    parser.add_argument("--list", action="store_true", help="list every missing track id")
    args = parser.parse_args(argv)
    try:
        index = load_index(args.index)
        root = find_data(args.data)
        if root is None:
            raise DataError(f"no GTZAN data found: {WHERE_TO_PUT}")
        v = verify(root, index)
    except DataError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"{root}: {len(index)} tracks in {args.index.name}")
    print(f"verified      {len(v.verified)}")
    print(f"mismatched    {len(v.mismatched)}{_listing(v.mismatched, None)}")
    print(f"missing       {len(v.missing)}{_listing(v.missing, None if args.list else 10)}")
    print(f"extra         {len(v.extra)}{_listing(v.extra, None)}")
    print(f"not verifiable by md5 (not .wav, e.g. .au originals) {len(v.unverifiable)}"
          f"{_listing(v.unverifiable, None if args.list else 10)}")
    print("OK: every track verified" if v.ok else "NOT OK: see above")
    return 0 if v.ok else 1
