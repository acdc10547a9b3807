"""A predicted genre written into a music file's own tags, with nothing else in the file lost.

Formats, told by content (``mutagen.File``), never by the file's name:

    MP3                ID3v2 ``TCON``; provenance ``TXXX:GENRE_SOURCE``
    WAV, AIFF          the same, in the file's ID3 chunk
    FLAC, Ogg Vorbis,  Vorbis comments: one ``GENRE`` entry per value; provenance ``GENRE_SOURCE``
    Ogg Opus
    MP4 / M4A          ``©gen``; provenance ``----:com.apple.iTunes:GENRE_SOURCE``

Any other format (AU, CAF, W64, WavPack, Ogg FLAC, ...) is refused with a `TagError`.

ID3 versions. An ID3v2.3 or ID3v2.4 tag is saved in its own version: mutagen writes the frames it does
not know only in the version they were read in, and converting drops frames (to 2.4: RVAD, EQUA, TRDA,
TSIZ; to 2.3: RVA2, TSOP, TSOA, TSOT, TMOO, ...). ``id3v23`` chooses the version of a tag that is new
(or ID3v1 only, or ID3v2.2, which mutagen cannot write): 2.3 with it, 2.4 without. Several genres are
separate values in 2.4 (null-separated, as mutagen writes them) and one value joined by ``"; "`` in 2.3.
An ID3v1 tag, where a file has one, is rewritten from the ID3v2 tag, as mutagen and Picard do. Genres
are read as stored: ``"(17)"`` stays ``"(17)"``, and a 2.3 tag's ``"Rock; Blues"`` is one value. An ID3
tag left with no frame is removed, so that the undo of a write to a file without one gives it back
byte for byte. MP4's numeric ``gnre`` atom is neither read nor changed.

Undo: `write_genre` returns what the file held (`Genre`); ``write_genre(path, *previous)`` puts it
back, every other tag as it was. A file that already holds what is asked is not written at all.

The write is a transaction. The original is copied to ``features.files.temp_name(file)`` beside it;
the copy gets the new tags, is flushed to disk, then checked: its genre and provenance read back as
asked, every other tag reads back as before (FLAC: every metadata block but the comments and the
padding too), and its audio is the original's byte for byte (MP3: the bytes between the ID3v2 and
ID3v1 tags; WAV and AIFF: every chunk but the ID3 one; FLAC: the frames after the metadata blocks;
Ogg: every packet but the comment header, and each audio page's granule position; MP4: the ``mdat``
bytes, though not the offset tables that mutagen rewrites when it moves them).
The copy takes the original's permission bits, extended attributes and, where permitted, owner and
group (with ``keep_mtime``, also its access and modification times), then is renamed over the
original, unless the original changed meanwhile. Whatever fails or kills the process before the
rename, the original is left byte for byte as it was; a failure removes the copy, a kill leaves it
(``.<name>.tmp-<pid>-<hex>``, a ``features.files.TEMP_RE`` name) for `remove_stale_temps`.

Refused, with the file untouched: a file without write permission (its mode bits are honoured even
for root: a read-only file is its owner's "do not touch"), a folder where the copy cannot be
written, and a file with hard links. A rename gives the file a new inode, so the other names of a
hard-linked file would keep the old tags; writing in place instead would give up the transaction,
and a kill halfway would damage every name. A symbolic link is followed: its target gets the tags
and the link stays a link.

mutagen (GPL-2.0-or-later) is optional (``make tags``): this module imports it only when called.
"""

import contextlib
import errno
import hashlib
import os
import re
import shutil
import stat
import struct
from pathlib import Path
from typing import NamedTuple

from features.audio import AudioError, info
from features.files import FileProblem, kill_point, owner_alive, temp_name

SOURCE_KEY = "GENRE_SOURCE"
MUTAGEN_MISSING = ("writing tags needs mutagen, which is not installed: `make tags` "
                   "(= .venv/bin/pip install -r requirements-tags.txt)")
# mutagen's class of a file -> how its tags are written; anything else cannot be written
_KINDS = {"MP3": "id3", "WAVE": "id3", "AIFF": "id3", "FLAC": "vorbis", "OggVorbis": "vorbis",
          "OggOpus": "vorbis", "MP4": "mp4"}
_OGG_HEADERS = {"OggVorbis": 3, "OggOpus": 2}  # header packets before the audio; the comment is the 2nd
_ID3_SOURCE = f"TXXX:{SOURCE_KEY}"
_MP4_GENRE = "\xa9gen"
_MP4_SOURCE = f"----:com.apple.iTunes:{SOURCE_KEY}"
_V23_JOIN = "; "
_STALE = re.compile(r"\..+\.tmp-\d+-[0-9a-f]{6}")  # temp_name's copies, and nothing else of a user's
_BLOCK = 1 << 20  # bytes per read when copying or hashing
# What stopped a write, by errno; anything else is named by the OS's own message
_PROBLEMS = {errno.ENOSPC: "the disk is full: free some space",
             errno.EDQUOT: "the disk quota is used up: free some space",
             errno.EROFS: "the file system is read-only",
             errno.EACCES: "no permission to write its folder",
             errno.EPERM: "the operation is not permitted there",
             errno.EFBIG: "it would exceed the file size limit (ulimit -f)"}


class TagError(FileProblem):
    """Tags that cannot be read or written; ``str()`` is one line, ``<file>: <problem>``."""


class MutagenMissing(RuntimeError):
    """mutagen, the optional tag library, is not installed: one line naming the install command."""

    def __init__(self):
        super().__init__(MUTAGEN_MISSING)


class Genre(NamedTuple):
    """What a file's tags hold: its genre values, as stored, and our provenance string (None: none)."""

    genres: tuple[str, ...]
    source: str | None


def require_mutagen():
    """The ``mutagen`` module; `MutagenMissing` when it is not installed."""
    try:
        import mutagen
    except ImportError:
        raise MutagenMissing() from None
    return mutagen


def read_genre(path) -> Genre:
    """The genre values and provenance that ``path``'s tags hold now.

    Parameters
    ----------
    path : str or Path
        A music file (a symbolic link is followed).

    Returns
    -------
    Genre
        ``Genre((), None)`` for a file with neither.

    Raises
    ------
    TagError
        Not a file, a format this module cannot write, or tags mutagen cannot read.
    MutagenMissing
    """
    require_mutagen()
    path = Path(path)
    if not path.is_file():
        raise TagError(path, "no such file" if not path.exists() else "not a regular file")
    f = _open(path, path)
    return _genre(f, _KINDS[type(f).__name__])


def write_genre(path, genres: tuple, source: str | None, *, id3v23: bool = False,
                keep_mtime: bool = False) -> Genre:
    """Set ``path``'s genre and provenance, keeping every other tag and the audio (see the module).

    Parameters
    ----------
    path : str or Path
        A music file; a symbolic link's target is written.
    genres : tuple of str
        The genre values; ``()`` removes the genre field.
    source : str or None
        The provenance (``SOURCE_KEY``); None removes it.
    id3v23 : bool
        ID3v2.3 rather than 2.4 for an ID3 tag that is new (an existing 2.3 or 2.4 tag keeps its version).
    keep_mtime : bool
        Give the file back its access and modification times (nanoseconds).

    Returns
    -------
    Genre
        What the file held before; ``write_genre(path, *previous)`` (same ``id3v23``) restores it.
        A file that already holds what is asked is not written.

    Raises
    ------
    TagError
        The file is left as it was (see the module for what is refused and checked).
    MutagenMissing
    ValueError
        ``genres`` is not a tuple of non-empty strings, or ``source`` is empty.
    """
    if isinstance(genres, str) or not all(isinstance(g, str) and g for g in genres) or source == "":
        raise ValueError("genre values and the source must be non-empty strings")
    require_mutagen()
    path = Path(path)
    target, before = _writable(path)
    f = _open(target, path)
    kind = _KINDS[type(f).__name__]
    previous = _genre(f, kind)
    version = _id3_version(f.tags, id3v23) if kind == "id3" else None
    wanted = Genre((_V23_JOIN.join(genres),) if version == 3 and genres else tuple(genres), source)
    if previous == wanted:
        return previous
    tmp = temp_name(target)
    try:
        audio = _audio(target, type(f).__name__)
        _copy(target, tmp, before)
        copy = _load(tmp, type(f), path)
        _apply(copy, kind, wanted, version)
        _save(copy, version, path)
        _fsync(tmp)
        _verify(path, tmp, copy, kind, wanted, audio)
        if keep_mtime:
            os.utime(tmp, ns=(before.st_atime_ns, before.st_mtime_ns))
        if _identity(os.stat(target)) != _identity(before):
            raise TagError(path, "changed by another program while its tags were written: nothing written")
        kill_point(f"{target.name}@tags")
        os.replace(tmp, target)
    except OSError as err:
        raise TagError(path, f"not written: {_problem(err)}; the file is unchanged") from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_folder(target.parent)
    return previous


def remove_stale_temps(folder) -> list:
    """Delete the copies that killed writers left in ``folder`` (not below it); a running writer's stay.

    Only regular files named as ``temp_name`` names them (``.<name>.tmp-<pid>-<hex>``) whose owner
    process is gone (``features.files.owner_alive``) are removed: nothing else in a music folder is ours.

    Returns
    -------
    list of Path
        The files removed (one that cannot be removed stays, as do all of a folder that cannot be
        listed; the caller goes on).
    """
    try:
        entries = list(Path(folder).iterdir())
    except OSError:  # gone, or not readable: nothing of ours can be removed there
        return []
    gone = [p for p in entries
            if _STALE.fullmatch(p.name) and p.is_file() and not p.is_symlink() and not owner_alive(p.name)]
    for p in gone:
        with contextlib.suppress(OSError):
            p.unlink()
    return gone


def _writable(path: Path):
    """The file a write changes (``path``, or its link's target) and its stat; TagError if refused."""
    try:
        target = path.resolve(strict=True)
        st = target.stat()
    except FileNotFoundError:
        raise TagError(path, "no such file") from None
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop (Python < 3.13)
        raise TagError(path, f"cannot be opened ({err})") from None
    if not stat.S_ISREG(st.st_mode):
        raise TagError(path, "not a regular file")
    if not os.access(target, os.W_OK) or not st.st_mode & 0o222:
        raise TagError(path, "read-only (no write permission): nothing written")
    if st.st_nlink > 1:
        raise TagError(path, f"has {st.st_nlink} hard links, which a rewrite would split (the other names "
                             "would keep the old tags): nothing written")
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise TagError(path, "its folder is not writable (the new file is written beside the old one): "
                             "nothing written")
    return target, st


def _open(path: Path, shown: Path):
    """``path`` loaded by mutagen, as the class of a format we write; TagError naming ``shown``."""
    mutagen = require_mutagen()
    try:
        f = mutagen.File(path)
    except _failures(mutagen) as err:
        fmt = None if _cause(err) else _format_name(path)
        if fmt and fmt not in ("WAV", "WAVEX", "AIFF", "FLAC", "OGG", "MP3"):
            raise TagError(shown, f"cannot write tags to this format ({fmt})") from None
        raise TagError(shown, _unreadable(err)) from None
    name = type(f).__name__ if f is not None else None
    if name not in _KINDS:
        raise TagError(shown, f"cannot write tags to this format ({_format_name(path) or name or 'unknown'})")
    if name == "MP3" and not _starts_as_mp3(path):
        raise TagError(shown, "does not start with an ID3 tag or an MPEG frame, as MP3 does (another format "
                              "named .mp3?): nothing written")
    # raw ID3 frames, not translated to 2.4: what a write keeps and an undo restores
    return _load(path, type(f), shown) if _KINDS[name] == "id3" else f


def _load(path: Path, cls, shown: Path):
    """``path`` loaded by mutagen class ``cls`` (ID3 frames untranslated); TagError naming ``shown``."""
    mutagen = require_mutagen()
    try:
        return cls(path, translate=False) if _KINDS[cls.__name__] == "id3" else cls(path)
    except _failures(mutagen) as err:
        raise TagError(shown, _unreadable(err)) from None


def _unreadable(err) -> str:
    """Why mutagen could not load a file: the system's reason, or its own (the tags' damage)."""
    cause = _cause(err)
    return f"cannot be read ({cause.strerror or cause})" if cause else f"cannot read its tags (damaged?): {err}"


def _cause(err):
    """The OSError that mutagen wrapped into ``err`` (it raises its own error for any), or None."""
    cause = err.args[0] if err.args else None
    return cause if isinstance(cause, OSError) else None


def _failures(mutagen) -> tuple:
    """What mutagen raises on a file it cannot parse (beyond its own errors, on some damaged data)."""
    return mutagen.MutagenError, ValueError, EOFError, IndexError, struct.error


def _format_name(path: Path):
    """libsndfile's name of ``path``'s format (``"AU"``), for messages; None where it cannot tell."""
    try:
        return info(path).format
    except AudioError:
        return None


def _starts_as_mp3(path: Path) -> bool:
    """Whether ``path`` begins with an ID3v2 tag or an MPEG frame sync: mutagen also takes, by its
    ``.mp3`` name, a file where it finds frames further on, and a tag put before another format breaks it."""
    with open(path, "rb") as f:
        head = f.read(3)
    return head == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)


def _genre(f, kind: str) -> Genre:
    """The genre values and provenance of a loaded file."""
    tags = f.tags
    if tags is None:
        return Genre((), None)
    if kind == "id3":
        genres = [t for frame in tags.getall("TCON") for t in frame.text]
        source = [t for frame in tags.getall(_ID3_SOURCE) for t in frame.text]
    elif kind == "mp4":
        genres = tags.get(_MP4_GENRE, [])
        source = [bytes(v).decode("utf-8", "replace") for v in tags.get(_MP4_SOURCE, [])]
    else:
        genres, source = tags.get("GENRE", []), tags.get(SOURCE_KEY, [])
    return Genre(tuple(str(g) for g in genres), _V23_JOIN.join(source) if source else None)


def _id3_version(tags, id3v23: bool) -> int:
    """The ID3v2 version to save: a 2.3 or 2.4 tag's own, else 3 with ``id3v23``, else 4."""
    if tags is not None and tags.version[:2] in ((2, 3), (2, 4)):
        return tags.version[1]
    return 3 if id3v23 else 4


def _apply(f, kind: str, wanted: Genre, version):
    """Put ``wanted`` (values as they are to be stored) in the tags of a loaded file."""
    if f.tags is None:
        f.add_tags()
    tags = f.tags
    if kind == "id3":
        _set_id3(tags, wanted, version)
    elif kind == "mp4":
        from mutagen.mp4 import MP4FreeForm

        _set_key(tags, _MP4_GENRE, list(wanted.genres))
        _set_key(tags, _MP4_SOURCE, [MP4FreeForm(wanted.source.encode())] if wanted.source is not None else [])
    else:
        _set_vorbis(tags, "GENRE", wanted.genres)
        _set_vorbis(tags, SOURCE_KEY, [wanted.source] if wanted.source is not None else [])


def _set_id3(tags, wanted: Genre, version: int):
    """Set TCON and TXXX:GENRE_SOURCE; a tag not yet 2.3 or 2.4 is converted to ``version`` first."""
    from mutagen.id3 import TCON, TXXX, Encoding

    if tags.version[:2] != (2, version):
        convert = tags.update_to_v23 if version == 3 else tags.update_to_v24
        convert()
    tags.delall("TCON")
    tags.delall(_ID3_SOURCE)
    if wanted.genres:
        tags.add(TCON(encoding=Encoding.UTF8, text=list(wanted.genres)))
    if wanted.source is not None:
        tags.add(TXXX(encoding=Encoding.UTF8, desc=SOURCE_KEY, text=[wanted.source]))


def _set_key(tags, key: str, values: list):
    """Set a dict-like tag's ``key`` to ``values``; none removes it."""
    if values:
        tags[key] = values
    elif key in tags:
        del tags[key]


def _set_vorbis(comments, key: str, values):
    """Replace the Vorbis comments named ``key`` (any case) by one entry per value, where the first of
    them stood and spelt as it was, so that an undo gives back the very list of comments."""
    entries = comments[:]  # a slice is the list of (key, value): an index is taken for a key
    at = [i for i, (k, _) in enumerate(entries) if k.lower() == key.lower()]
    name = entries[at[0]][0] if at else key
    kept = [e for i, e in enumerate(entries) if i not in at]
    pos = at[0] if at else len(kept)
    comments[:] = kept[:pos] + [(name, v) for v in values] + kept[pos:]


def _save(f, version, shown: Path):
    """Save a loaded file's tags in place (an ID3 tag in ``version``, other frames' values untouched)."""
    mutagen = require_mutagen()
    try:
        if version is not None and not f.tags and not f.tags.unknown_frames:
            f.delete()  # no empty ID3 tag: an undo gives a file that had none back without one
        elif version is None:
            f.save()
        else:  # v23_sep None: a 2.3 frame's several values stay null-separated, as they were read
            f.save(v2_version=version, v23_sep=None)
    except _failures(mutagen) as err:
        if _cause(err):  # the disk's problem, not the tags': told as any failed write
            raise _cause(err) from None
        raise TagError(shown, f"mutagen cannot write its tags ({err}): the file is unchanged") from None


def _verify(shown: Path, tmp: Path, written, kind: str, wanted: Genre, audio):
    """TagError unless the copy ``tmp`` reads back ``wanted``, the other tags of ``written`` (the
    loaded copy as saved) and the original's ``audio``."""
    back = _load(tmp, type(written), shown)
    if _genre(back, kind) != wanted:
        raise TagError(shown, f"the written copy reads back {_genre(back, kind)}, not {wanted}: nothing written")
    if _others(back, kind) != _others(written, kind):
        raise TagError(shown, "the written copy's other tags differ from the original's: nothing written")
    if _audio(tmp, type(written).__name__) != audio:
        raise TagError(shown, "the written copy's audio differs from the original's: nothing written")


def _others(f, kind: str):
    """Every tag of a loaded file but its genre and provenance, in a comparable form."""
    tags = f.tags
    if tags is None:  # an ID3 file whose tag was removed, having held our fields alone
        return [], []
    if kind == "id3":
        return (sorted(repr(v) for k, v in tags.items() if k not in ("TCON", _ID3_SOURCE)),
                list(tags.unknown_frames))
    if kind == "mp4":
        return sorted((k, repr(v)) for k, v in tags.items() if k not in (_MP4_GENRE, _MP4_SOURCE))
    ours = ("genre", SOURCE_KEY.lower())
    blocks = [(b.code, b.write()) for b in getattr(f, "metadata_blocks", []) if b.code not in (1, 4)]
    return [c for c in tags if c[0].lower() not in ours], blocks  # FLAC blocks but padding (1), comments (4)


def _audio(path: Path, name: str):
    """What of ``path`` (mutagen class ``name``) a tag write must keep, as digests (see the module)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if name == "MP3":
            start = _id3_end(f, 0)
            f.seek(max(size - 128, 0))
            end = size - 128 if size >= start + 128 and f.read(3) == b"TAG" else size
            return _sha(f, start, end - start)
        if name in ("WAVE", "AIFF"):
            return list(_iff_chunks(f, "<I" if name == "WAVE" else ">I"))
        if name == "FLAC":
            return _sha(f, 0, _id3_end(f, 0)), _sha(f, _flac_audio(f), size)
        if name == "MP4":
            return list(_mp4_mdat(f, size))
        return _ogg_audio(f, _OGG_HEADERS[name])


def _sha(f, start: int, length: int) -> str:
    """sha256 of ``length`` bytes of ``f`` from ``start`` (fewer at the end of the file)."""
    digest = hashlib.sha256()
    f.seek(start)
    while length > 0 and (chunk := f.read(min(_BLOCK, length))):
        digest.update(chunk)
        length -= len(chunk)
    return digest.hexdigest()


def _id3_end(f, at: int) -> int:
    """Where the ID3v2 tag starting at ``at`` ends (``at`` itself where there is none)."""
    f.seek(at)
    head = f.read(10)
    if len(head) < 10 or head[:3] != b"ID3":
        return at
    size = sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10]))  # syncsafe
    return at + 10 + size + (10 if head[5] & 0x10 else 0)  # 0x10: a footer follows


def _iff_chunks(f, fmt: str):
    """(id, sha256 of the data) of each chunk of a RIFF or FORM file but its ID3 one; ``fmt`` reads
    a chunk's size (little-endian in RIFF, big-endian in FORM)."""
    pos = 12
    f.seek(pos)
    while len(head := f.read(8)) == 8:
        size = struct.unpack(fmt, head[4:])[0]
        if head[:4].rstrip().upper() != b"ID3":
            yield head[:4], _sha(f, pos + 8, size)
        pos += 8 + size + (size & 1)  # a chunk of odd size is padded to an even one
        f.seek(pos)


def _flac_audio(f) -> int:
    """Where a FLAC file's frames start: after ``fLaC`` (maybe behind an ID3v2 tag) and the blocks."""
    f.seek(_id3_end(f, 0) + 4)
    last = 0
    while not last and len(head := f.read(4)) == 4:
        last = head[0] & 0x80
        f.seek(int.from_bytes(head[1:], "big"), os.SEEK_CUR)
    return f.tell()


def _mp4_mdat(f, size: int):
    """sha256 of each top-level ``mdat`` atom's payload of an MP4 file."""
    pos = 0
    while pos + 8 <= size:
        f.seek(pos)
        length, name = struct.unpack(">I4s", f.read(8))
        header = 8
        if length == 1:
            length, header = struct.unpack(">Q", f.read(8))[0], 16
        elif length == 0:
            length = size - pos
        if length < header:
            return
        if name == b"mdat":
            yield _sha(f, pos + header, length - header)
        pos += length


def _ogg_audio(f, headers: int):
    """sha256 per logical stream of an Ogg file: of its packets but the first stream's comment header
    (its second packet), and of the granule position and end flag of each page past the headers.
    A tag write may repaginate the headers and renumber the pages; nothing of these may change."""
    digests, started, reading, first = {}, {}, {}, None
    for page in _ogg_pages(f):
        serial = page.serial
        first = serial if first is None else first
        digest = digests.setdefault(serial, hashlib.sha256())
        for i, data in enumerate(page.packets):
            if i == 0 and page.continued and serial in reading:
                reading[serial][1].extend(data)
                continue
            _hash_packet(digest, reading.pop(serial, None), serial == first)
            reading[serial] = (started.get(serial, 0), bytearray(data))
            started[serial] = started.get(serial, 0) + 1
        if started.get(serial, 0) > headers:
            digest.update(struct.pack(">q?", page.position, page.last))
    for serial, packet in reading.items():
        _hash_packet(digests[serial], packet, serial == first)
    return sorted((serial, d.hexdigest()) for serial, d in digests.items())


def _ogg_pages(f):
    """The pages of an Ogg file, up to its end or to trailing bytes that are no page."""
    from mutagen.ogg import OggPage, error

    while True:
        try:
            yield OggPage(f)
        except (EOFError, error):
            return


def _hash_packet(digest, packet, first_stream: bool):
    """Add ``packet`` (index, bytes; None: none) to ``digest``, unless it is the first stream's comment."""
    if packet is not None and not (first_stream and packet[0] == 1):
        digest.update(struct.pack(">QQ", packet[0], len(packet[1])) + packet[1])


def _copy(src: Path, dst: Path, st):
    """Copy ``src`` to a new file ``dst``, with its owner and group where permitted and its permission
    bits and extended attributes (chmod after chown, which clears set-user-ID bits)."""
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        shutil.copyfileobj(fin, fout, _BLOCK)
    with contextlib.suppress(OSError):
        os.chown(dst, st.st_uid, st.st_gid)
    shutil.copystat(src, dst)


def _fsync(path: Path):
    """Flush ``path``'s data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path):
    """Flush a folder's entries (the rename) to the disk, where the system allows it."""
    with contextlib.suppress(OSError):
        _fsync(folder)


def _identity(st) -> tuple:
    """What changes when another program writes a file or replaces it."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _problem(err: OSError) -> str:
    """What stopped a write, for a one-line message."""
    return _PROBLEMS.get(err.errno, err.strerror or str(err))
