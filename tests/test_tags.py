"""features.tags: a predicted genre written into a music file's own tags, and nothing else of it lost.

Every format is made from 3 s of a real GTZAN clip (a synthetic one where ../shared/data is absent)
and given tags before the test (title, artist, picture, ReplayGain, custom fields), so that a write can
be checked to keep them, the decoded samples and the audio stream's bytes (``stream``, an oracle
written apart from the module's own check).
"""
import base64
import errno
import io
import os
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

mutagen = pytest.importorskip("mutagen", reason="mutagen is not installed (make tags)")

from mutagen import id3  # noqa: E402
from mutagen.flac import Picture  # noqa: E402
from mutagen.mp4 import Atoms  # noqa: E402
from mutagen.ogg import OggPage  # noqa: E402

from conftest import REPO, SHARED_DATA  # noqa: E402
from features import synth, tags  # noqa: E402
from features.files import KILL_ENV, TEMP_RE  # noqa: E402
from features.tags import Genre, TagError, read_genre, write_genre  # noqa: E402

CLIP = SHARED_DATA / "gtzan_sample" / "blues" / "blues.00000.wav"
SR = 22050
SECONDS = 3
# name: (soundfile format, subtype, sample rate): Opus takes 8, 12, 16, 24 or 48 kHz only
FORMATS = {"mp3": ("MP3", "MPEG_LAYER_III", SR), "wav": ("WAV", "PCM_16", SR), "aiff": ("AIFF", "PCM_16", SR),
           "flac": ("FLAC", "PCM_16", SR), "ogg": ("OGG", "VORBIS", SR), "opus": ("OGG", "OPUS", 24000)}
ID3_FORMATS = ("mp3", "wav", "aiff")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8  # a cover's bytes: nothing parses them
SOURCE = "gtzan-genre 1.0 · svm r80 · 0.91"
NEW = ("Rock", "Música latina")


@pytest.fixture(scope="module")
def clip():
    """3 s of a real GTZAN clip (float32 mono at 22050 Hz), or of a synthetic one without the data."""
    if CLIP.exists():
        return sf.read(CLIP, frames=SECONDS * SR, dtype="float32")[0]
    return synth.generate(0, 0, duration=SECONDS)


def make(folder: Path, fmt: str, y, genre="Jazz", v2=4, name=None) -> Path:
    """A ``fmt`` file of ``y`` with a title, artist, picture, ReplayGain and custom fields, and
    ``genre`` (None: none); ID3 formats in ID3v2.``v2``."""
    kind, subtype, sr = FORMATS[fmt]
    path = folder / (name or f"clip.{fmt}")
    if sr != SR:
        y = np.interp(np.arange(len(y) * sr // SR) * SR / sr, np.arange(len(y)), y).astype(np.float32)
    sf.write(path, y, sr, format=kind, subtype=subtype)
    f = mutagen.File(path)
    if fmt in ID3_FORMATS:
        f.add_tags()
        for frame in id3_frames(genre, v2):
            f.tags.add(frame)
        f.save(v2_version=v2)
    else:
        vorbis_tags(f, fmt, genre)
        f.save()
    return path


def id3_frames(genre, v2: int) -> list:
    frames = [id3.TIT2(encoding=1, text=["Title é"]), id3.TPE1(encoding=1, text=["Artist"]),
              id3.APIC(encoding=1, mime="image/png", type=3, desc="cover", data=PNG),
              id3.TXXX(encoding=1, desc="REPLAYGAIN_TRACK_GAIN", text=["-6.50 dB"]),
              id3.TXXX(encoding=1, desc="SOMETHING", text=["custom"]),
              id3.PRIV(owner="gtzan.example", data=b"\x00\x01\x02")]
    # frames of one version only, which a conversion would drop
    frames += [id3.RVA2(desc="track", channel=1, gain=-6.5, peak=0.9), id3.TSOP(encoding=3, text=["Artist, The"]),
               id3.TDRC(encoding=3, text=["2004-05-06"])] if v2 == 4 else [id3.TYER(encoding=0, text=["2004"]),
                                                                           id3.TSIZ(encoding=0, text=["1234"])]
    return frames + ([id3.TCON(encoding=1, text=[genre])] if genre else [])


def vorbis_tags(f, fmt: str, genre):
    """Comments with ``genre`` (spelt ``genre``) between the others, and a picture."""
    pic = Picture()
    pic.type, pic.mime, pic.desc, pic.data = 3, "image/png", "cover", PNG
    f.tags.extend([("TITLE", "Title é"), ("ARTIST", "Artist"), *([("genre", genre)] if genre else []),
                   ("REPLAYGAIN_TRACK_GAIN", "-6.50 dB"), ("CUSTOMTHING", "custom")])
    if fmt == "flac":
        f.add_picture(pic)
    else:
        f.tags.append(("METADATA_BLOCK_PICTURE", base64.b64encode(pic.write()).decode()))


def stream(path: Path, fmt: str):
    """The audio stream's bytes, found without features.tags: MP3 between the ID3v2 and ID3v1 tags,
    WAV's data and AIFF's SSND chunk, FLAC after its metadata blocks, Ogg's packets but the comment
    header (the page numbers may change) with the granule positions of the pages."""
    data = path.read_bytes()
    if fmt == "mp3":
        size = sum(b << (7 * (3 - i)) for i, b in enumerate(data[6:10])) + 10 if data[:3] == b"ID3" else 0
        return data[size:len(data) - 128 if data[-128:-125] == b"TAG" else len(data)]
    if fmt in ("wav", "aiff"):
        order, want, pos = ("<I", b"data", 12) if fmt == "wav" else (">I", b"SSND", 12)
        while data[pos:pos + 4] != want:
            pos += 8 + struct.unpack(order, data[pos + 4:pos + 8])[0]
            pos += pos & 1
        return data[pos + 8:pos + 8 + struct.unpack(order, data[pos + 4:pos + 8])[0]]
    if fmt == "flac":
        pos, last = 4, False
        while not last:
            last, pos = data[pos] & 0x80, pos + 4 + int.from_bytes(data[pos + 1:pos + 4], "big")
        return data[pos:]
    pages, f = [], io.BytesIO(data)
    while f.tell() < len(data):
        pages.append(OggPage(f))
    packets = OggPage.to_packets(pages)
    return packets[:1] + packets[2:], [p.position for p in pages if p.position > 0]


def others(path: Path):
    """Every tag but the genre and provenance, as mutagen reads them (translated to ID3v2.4)."""
    f = mutagen.File(path)
    if isinstance(f.tags, id3.ID3):
        return sorted(repr(v) for k, v in f.tags.items() if k not in ("TCON", "TXXX:GENRE_SOURCE"))
    pictures = [p.write() for p in getattr(f, "pictures", [])]
    return [c for c in f.tags if c[0].lower() not in ("genre", "genre_source")], pictures


def snapshot(path: Path, fmt: str):
    """What a write must keep: decoded samples, stream bytes, other tags."""
    return sf.read(path, dtype="float32")[0].tobytes(), stream(path, fmt), others(path)


def temps(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if TEMP_RE.search(p.name))


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    return text


# ---- what is written, and what is kept -------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_write_keeps_audio_and_other_tags_and_undo_restores(tmp_path, clip, fmt):
    path = make(tmp_path, fmt, clip)
    before = snapshot(path, fmt)
    previous = write_genre(path, NEW, SOURCE)
    assert previous == Genre(("Jazz",), None)
    assert read_genre(path) == Genre(NEW, SOURCE)
    assert snapshot(path, fmt) == before
    assert write_genre(path, *previous) == Genre(NEW, SOURCE)  # the undo
    assert read_genre(path) == previous
    assert snapshot(path, fmt) == before
    assert temps(tmp_path) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_undo_of_a_file_without_genre_removes_both_fields(tmp_path, clip, fmt):
    path = make(tmp_path, fmt, clip, genre=None)
    previous = write_genre(path, ("Rock",), SOURCE)
    assert previous == Genre((), None)
    write_genre(path, *previous)
    assert read_genre(path) == Genre((), None)
    data = path.read_bytes()
    assert b"GENRE_SOURCE" not in data and b"Rock" not in data


@pytest.mark.parametrize("fmt", ID3_FORMATS)
def test_an_undo_gives_a_file_without_tags_back_byte_for_byte(tmp_path, clip, fmt):
    path = tmp_path / f"bare.{fmt}"
    sf.write(path, clip, SR, format=FORMATS[fmt][0], subtype=FORMATS[fmt][1])
    original = path.read_bytes()
    write_genre(path, *write_genre(path, NEW, SOURCE))  # no ID3 tag is left behind empty
    assert path.read_bytes() == original


def test_several_genres_as_each_format_stores_them(tmp_path, clip):
    for fmt in FORMATS:
        path = make(tmp_path, fmt, clip, name=f"g.{fmt}")
        write_genre(path, ("Rock", "Blues"), None)
        f = mutagen.File(path)
        if fmt in ID3_FORMATS:  # ID3v2.4: one TCON frame, its values null-separated
            assert f.tags.getall("TCON")[0].text == ["Rock", "Blues"] and b"Rock\x00Blues" in path.read_bytes()
        else:  # Vorbis comments: one GENRE entry per value, where the old one stood, spelt as it was
            assert [c for c in f.tags if c[0].lower() == "genre"] == [("genre", "Rock"), ("genre", "Blues")]
            keys = [k for k, _ in f.tags]
            assert keys[keys.index("ARTIST") + 1:keys.index("ARTIST") + 3] == ["genre", "genre"]


def test_vorbis_comments_come_back_in_their_order_after_an_undo(tmp_path, clip):
    path = make(tmp_path, "flac", clip)
    comments = list(mutagen.File(path).tags)
    write_genre(path, *write_genre(path, NEW, SOURCE))
    assert list(mutagen.File(path).tags) == comments


def test_id3v23_for_a_new_tag_joins_the_genres(tmp_path, clip):
    for v23, version, stored in ((True, 3, ("Rock; Blues",)), (False, 4, ("Rock", "Blues"))):
        path = tmp_path / f"new{version}.mp3"
        sf.write(path, clip, SR, format="MP3", subtype="MPEG_LAYER_III")
        write_genre(path, ("Rock", "Blues"), SOURCE, id3v23=v23)
        assert path.read_bytes()[3] == version
        assert read_genre(path) == Genre(stored, SOURCE)
        assert write_genre(path, ("Rock", "Blues"), SOURCE, id3v23=v23) == Genre(stored, SOURCE)  # nothing to do


def test_an_existing_tag_keeps_its_version_and_every_frame(tmp_path, clip):
    """Converting would drop frames (RVA2 and TSOP to 2.3, RVAD to 2.4, unknown ones both ways)."""
    for v2, v23 in ((3, False), (4, True)):
        path = make(tmp_path, "mp3", clip, v2=v2, name=f"v{v2}.mp3")
        add_unknown_frame(path, b"XTST", b"kept as it is")
        before = snapshot(path, "mp3")
        write_genre(path, NEW, SOURCE, id3v23=v23)
        data = path.read_bytes()
        assert data[3] == v2 and b"XTST" in data and (b"TSIZ" if v2 == 3 else b"RVA2") in data
        assert read_genre(path) == Genre(("Rock; Música latina",) if v2 == 3 else NEW, SOURCE)
        assert snapshot(path, "mp3") == before
        assert write_genre(path, ("Jazz",), None, id3v23=v23).source == SOURCE


def add_unknown_frame(path: Path, name: bytes, data: bytes):
    """Put a frame mutagen does not know at the head of an MP3's ID3v2 tag."""
    raw = path.read_bytes()
    version, size = raw[3], sum(b << (7 * (3 - i)) for i, b in enumerate(raw[6:10]))
    length = sum((len(data) >> (7 * i) & 0x7F) << (8 * i) for i in range(4)) if version == 4 else len(data)
    frame = name + struct.pack(">IH", length, 0) + data
    size += len(frame)
    header = raw[:6] + bytes((size >> (7 * (3 - i))) & 0x7F for i in range(4))
    path.write_bytes(header + frame + raw[10:])


@pytest.mark.parametrize("v2", [True, False])
def test_an_id3v1_tag_stays_and_follows_the_genre(tmp_path, clip, v2):
    path = make(tmp_path, "mp3", clip)
    f = mutagen.File(path)
    f.save(v1=id3.ID3v1SaveOptions.CREATE)
    if not v2:  # ID3v1 alone: an ID3v2 tag is made, holding what the ID3v1 one held
        id3.ID3(path).delete(delete_v1=False, delete_v2=True)
    before = snapshot(path, "mp3")
    write_genre(path, ("Rock",), SOURCE)
    data = path.read_bytes()
    assert data[-128:-125] == b"TAG" and data[-1] == 17  # ID3v1 genre 17: Rock
    assert data[-125:-95].rstrip(b"\0") == "Title é".encode("latin-1")
    assert snapshot(path, "mp3") == before


def test_the_same_genre_is_not_written_again(tmp_path, clip):
    path = make(tmp_path, "flac", clip)
    write_genre(path, NEW, SOURCE)
    st, data = path.stat(), path.read_bytes()
    assert write_genre(path, NEW, SOURCE) == Genre(NEW, SOURCE)
    assert path.read_bytes() == data and path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_ino == st.st_ino


def test_source_none_removes_only_the_provenance(tmp_path, clip):
    path = make(tmp_path, "ogg", clip)
    write_genre(path, ("Rock",), SOURCE)
    assert write_genre(path, ("Rock",), None) == Genre(("Rock",), SOURCE)
    assert read_genre(path) == Genre(("Rock",), None) and b"GENRE_SOURCE" not in path.read_bytes()


def test_bad_requests_are_refused_before_any_file_is_read(tmp_path):
    for genres, source in (("Rock", None), (("",), None), (("Rock",), "")):
        with pytest.raises(ValueError):
            write_genre(tmp_path / "absent.mp3", genres, source)


# ---- the file's own properties ---------------------------------------------------------------------

def test_permission_bits_and_owner_are_kept(tmp_path, clip):
    path = make(tmp_path, "mp3", clip)
    path.chmod(0o640)
    st = path.stat()
    write_genre(path, NEW, SOURCE)
    after = path.stat()
    assert (after.st_mode & 0o7777, after.st_uid, after.st_gid) == (0o640, st.st_uid, st.st_gid)


def test_keep_mtime_gives_back_both_times(tmp_path, clip):
    for keep in (True, False):
        path = make(tmp_path, "wav", clip, name=f"{keep}.wav")
        os.utime(path, ns=(1_000_000_000_123_456_789, 1_100_000_000_987_654_321))
        write_genre(path, NEW, SOURCE, keep_mtime=keep)
        st = path.stat()
        assert ((st.st_atime_ns, st.st_mtime_ns) == (1_000_000_000_123_456_789, 1_100_000_000_987_654_321)) == keep


def test_a_symlink_stays_a_link_and_its_target_is_written(tmp_path, clip):
    target = make(tmp_path, "flac", clip, name="real.flac")
    (tmp_path / "sub").mkdir()
    link = tmp_path / "sub" / "link.flac"
    link.symlink_to("../real.flac")
    write_genre(link, NEW, SOURCE)
    assert link.is_symlink() and os.readlink(link) == "../real.flac"
    assert read_genre(target) == read_genre(link) == Genre(NEW, SOURCE)
    assert temps(tmp_path) == temps(tmp_path / "sub") == []


# ---- refused, the file untouched -------------------------------------------------------------------

def test_a_read_only_file_is_refused(tmp_path, clip):
    path = make(tmp_path, "mp3", clip)
    path.chmod(0o444)  # honoured even for root, who could rename over it
    data = path.read_bytes()
    with pytest.raises(TagError) as err:
        write_genre(path, NEW, SOURCE)
    assert one_line(err) == f"{path}: read-only (no write permission): nothing written"
    assert path.read_bytes() == data and temps(tmp_path) == []


def test_a_folder_that_is_not_writable_is_one_line(tmp_path, clip, monkeypatch):
    path = make(tmp_path, "mp3", clip)
    if os.geteuid() == 0:  # root writes any folder: the folder as anyone else would find it
        access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: access(p, mode) and Path(p) != tmp_path)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(TagError) as err:
            write_genre(path, NEW, SOURCE)
    finally:
        tmp_path.chmod(0o755)
    assert one_line(err) == (f"{path}: its folder is not writable (the new file is written beside the old one): "
                             "nothing written")
    assert read_genre(path).genres == ("Jazz",) and temps(tmp_path) == []


def test_a_hard_linked_file_is_refused(tmp_path, clip):
    path = make(tmp_path, "wav", clip)
    os.link(path, tmp_path / "other.wav")
    data = path.read_bytes()
    with pytest.raises(TagError, match="has 2 hard links") as err:
        write_genre(path, NEW, SOURCE)
    one_line(err)
    assert path.read_bytes() == data and (tmp_path / "other.wav").stat().st_nlink == 2


@pytest.mark.parametrize("fmt", ["AU", "CAF", "W64"])
def test_a_format_without_writable_tags_is_one_line(tmp_path, clip, fmt):
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, clip, SR, format=fmt, subtype="PCM_16")
    data = path.read_bytes()
    for call in (lambda: write_genre(path, NEW, SOURCE), lambda: read_genre(path)):
        with pytest.raises(TagError) as err:
            call()
        assert one_line(err) == f"{path}: cannot write tags to this format ({fmt})"
    assert path.read_bytes() == data


def test_damaged_files_are_one_line(tmp_path, clip):
    flac = make(tmp_path, "flac", clip).read_bytes()
    mp3 = make(tmp_path, "mp3", clip).read_bytes()
    damaged = {"garbage.mp3": bytes(range(256)) * 40,
               "cut-in-metadata.flac": flac[:len(flac) // 2 if len(flac) // 2 < flac.find(PNG) else flac.find(PNG)],
               "cut-in-its-tag.mp3": mp3[:mp3.find(PNG) + 10],
               "zeros-before.mp3": bytes(4096) + mp3[stream_start(mp3):],
               "empty.mp3": b""}
    for name, data in damaged.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(TagError) as err:
            write_genre(path, NEW, SOURCE)
        assert one_line(err).startswith(f"{path}: "), name
        assert path.read_bytes() == data
    assert temps(tmp_path) == []


def test_a_file_that_cannot_be_read_says_why(tmp_path, clip, monkeypatch):
    path = make(tmp_path, "ogg", clip)

    def unreadable(*args, **kwargs):  # as for a file without read permission, which root still reads
        raise mutagen.MutagenError(PermissionError(errno.EACCES, os.strerror(errno.EACCES)))

    monkeypatch.setattr(mutagen, "File", unreadable)
    with pytest.raises(TagError) as err:
        read_genre(path)
    assert one_line(err) == f"{path}: cannot be read ({os.strerror(errno.EACCES)})"


def stream_start(mp3: bytes) -> int:
    return sum(b << (7 * (3 - i)) for i, b in enumerate(mp3[6:10])) + 10


def test_formats_are_told_by_content_not_name(tmp_path, clip):
    for fmt, name in (("wav", "wav-named.mp3"), ("flac", "flac-named.ogg")):
        path = make(tmp_path, fmt, clip, name=name)
        before = snapshot(path, fmt)
        write_genre(path, NEW, SOURCE)
        assert read_genre(path) == Genre(NEW, SOURCE)
        assert snapshot(path, fmt) == before and sf.info(path).format == FORMATS[fmt][0]


# ---- interrupted, failed, or raced: the original byte for byte --------------------------------------

KILLED = "import sys; from features.tags import write_genre; write_genre(sys.argv[1], ('Rock',), 'svm')"


@pytest.mark.parametrize("fmt", ["mp3", "flac"])
def test_a_kill_before_the_rename_leaves_the_original_and_a_temp_for_cleanup(tmp_path, clip, fmt):
    path = make(tmp_path, fmt, clip)
    data = path.read_bytes()
    env = {**os.environ, KILL_ENV: f"{path.name}@tags"}
    done = subprocess.run([sys.executable, "-c", KILLED, str(path)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert path.read_bytes() == data
    (left,) = temps(tmp_path)
    assert left.startswith(f".{path.name}.tmp-")
    running = tmp_path / f".{path.name}.tmp-{os.getpid()}-abcdef"  # a live writer's: kept
    running.write_bytes(b"")
    (tmp_path / "notes.tmp-1").write_bytes(b"")  # not ours: kept
    assert tags.remove_stale_temps(tmp_path) == [tmp_path / left]
    assert temps(tmp_path) == sorted([running.name, "notes.tmp-1"])
    assert write_genre(path, ("Rock",), "svm") == Genre(("Jazz",), None)


def failing_copy(code):
    def copy(src, dst, st):
        with open(dst, "xb") as f:
            f.write(src.read_bytes()[:1000])
        raise OSError(code, os.strerror(code), str(dst))
    return copy


def failing_save(code):
    def save(self, *args, **kwargs):
        with open(self.filename, "r+b") as f:
            f.truncate(1000)  # what mutagen had written when the disk filled
        raise mutagen.MutagenError(OSError(code, os.strerror(code)))
    return save


@pytest.mark.parametrize("stage", ["copy", "save"])
@pytest.mark.parametrize("code, problem", [(errno.ENOSPC, "the disk is full: free some space"),
                                           (errno.EDQUOT, "the disk quota is used up: free some space"),
                                           (errno.EROFS, "the file system is read-only"),
                                           (errno.EIO, os.strerror(errno.EIO))])
def test_a_failed_write_leaves_the_file_and_no_temp(tmp_path, clip, monkeypatch, stage, code, problem):
    path = make(tmp_path, "mp3", clip)
    data = path.read_bytes()
    if stage == "copy":
        monkeypatch.setattr(tags, "_copy", failing_copy(code))
    else:
        monkeypatch.setattr(mutagen.FileType, "save", failing_save(code))
    with pytest.raises(TagError) as err:
        write_genre(path, NEW, SOURCE)
    assert one_line(err) == f"{path}: not written: {problem}; the file is unchanged"
    assert path.read_bytes() == data and temps(tmp_path) == []


def test_a_copy_that_does_not_read_back_as_asked_is_not_renamed(tmp_path, clip, monkeypatch):
    path = make(tmp_path, "flac", clip)
    data = path.read_bytes()
    apply = tags._apply
    monkeypatch.setattr(tags, "_apply", lambda f, kind, wanted, version: apply(f, kind, Genre(("Pop",), None), version))
    with pytest.raises(TagError, match="reads back") as err:
        write_genre(path, NEW, SOURCE)
    one_line(err)
    assert path.read_bytes() == data and temps(tmp_path) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_copy_whose_audio_changed_is_not_renamed(tmp_path, clip, monkeypatch, fmt):
    """As if mutagen had a bug: the check before the rename catches one bit of audio changed."""
    path = make(tmp_path, fmt, clip)
    data = path.read_bytes()
    save = tags._save

    def buggy(f, version, shown):
        save(f, version, shown)
        with open(f.filename, "r+b") as out:  # the middle of the file is audio in every format here
            out.seek(len(data) // 2)
            byte = out.read(1)
            out.seek(len(data) // 2)
            out.write(bytes([byte[0] ^ 1]))

    monkeypatch.setattr(tags, "_save", buggy)
    with pytest.raises(TagError, match="audio differs") as err:
        write_genre(path, NEW, SOURCE)
    one_line(err)
    assert path.read_bytes() == data and temps(tmp_path) == []


@pytest.mark.parametrize("fmt", ["mp3", "flac", "opus"])
def test_a_copy_that_lost_another_tag_is_not_renamed(tmp_path, clip, monkeypatch, fmt):
    path = make(tmp_path, fmt, clip)
    data = path.read_bytes()
    save = tags._save
    key = "TIT2" if fmt == "mp3" else "TITLE"

    def buggy(f, version, shown):
        title = f.tags[key]
        del f.tags[key]  # mutagen "forgets" to write it
        save(f, version, shown)
        f.tags[key] = title  # what the caller believes was written

    monkeypatch.setattr(tags, "_save", buggy)
    with pytest.raises(TagError, match="other tags differ") as err:
        write_genre(path, NEW, SOURCE)
    one_line(err)
    assert path.read_bytes() == data and temps(tmp_path) == []


def test_a_file_changed_meanwhile_is_not_replaced(tmp_path, clip, monkeypatch):
    path = make(tmp_path, "wav", clip)
    save = tags._save

    def racing(f, version, shown):
        save(f, version, shown)
        os.utime(path, ns=(1, 2))  # another program wrote the original meanwhile

    monkeypatch.setattr(tags, "_save", racing)
    with pytest.raises(TagError, match="changed by another program") as err:
        write_genre(path, NEW, SOURCE)
    one_line(err)
    assert path.stat().st_mtime_ns == 2 and read_genre(path).genres == ("Jazz",) and temps(tmp_path) == []


# ---- MP4, without an encoder: a file built atom by atom --------------------------------------------

def atom(name: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), name) + payload


def minimal_m4a(payload: bytes) -> bytes:
    """ftyp, moov (mvhd, one sound track whose stco points at the payload), mdat: what mutagen reads."""
    ftyp = atom(b"ftyp", b"M4A \0\0\0\0M4A mp42isom")

    def moov(offset):
        mvhd = atom(b"mvhd", bytes(4) + struct.pack(">IIII", 0, 0, 1000, 2000) + bytes(80))
        mdhd = atom(b"mdhd", bytes(4) + struct.pack(">IIII", 0, 0, SR, SR * 2) + bytes(4))
        hdlr = atom(b"hdlr", bytes(8) + b"soun" + bytes(13))
        stbl = atom(b"stbl", atom(b"stco", bytes(4) + struct.pack(">II", 1, offset)))
        return atom(b"moov", mvhd + atom(b"trak", atom(b"mdia", mdhd + hdlr + atom(b"minf", stbl))))

    return ftyp + moov(len(ftyp + moov(0)) + 8) + atom(b"mdat", payload)


def test_mp4_genre_with_the_audio_where_its_offsets_say(tmp_path):
    payload = np.random.default_rng(0).bytes(5000)
    path = tmp_path / "clip.m4a"
    path.write_bytes(minimal_m4a(payload))
    assert write_genre(path, NEW, SOURCE) == Genre((), None)
    assert read_genre(path) == Genre(NEW, SOURCE)
    data = path.read_bytes()
    stco = Atoms(io.BytesIO(data)).path(b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stco")[-1]
    offset = struct.unpack(">I", data[stco.offset + 16:stco.offset + 20])[0]
    assert offset > len(minimal_m4a(b"")) - 8 and data[offset:offset + len(payload)] == payload  # moved, followed
    write_genre(path, (), None)
    assert read_genre(path) == Genre((), None)


# ---- without mutagen; the install ------------------------------------------------------------------

def test_without_mutagen_one_line_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mutagen", None)  # import mutagen now raises ImportError
    for call in (tags.require_mutagen, lambda: read_genre(tmp_path / "x.mp3"),
                 lambda: tags.write_genre(make_wav(tmp_path), NEW, SOURCE)):
        with pytest.raises(tags.MutagenMissing) as err:
            call()
        assert "make tags" in one_line(err) and "requirements-tags.txt" in str(err.value)


def make_wav(folder: Path) -> Path:
    path = folder / "x.wav"
    sf.write(path, np.zeros(SR, np.float32), SR)
    return path


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_tags_installs_the_pinned_mutagen_and_make_test_runs_it(tmp_path):
    assert "mutagen==1.48.1" in (REPO / "requirements-tags.txt").read_text().split()
    for name in ("Makefile", *(p.name for p in REPO.glob("requirements*.txt"))):
        shutil.copy(REPO / name, tmp_path / name)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    for target in ("tags", "test"):
        done = subprocess.run(["make", "--no-print-directory", "-n", target], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert ".venv/bin/python -m pip install -q -r requirements-tags.txt" in done.stdout.splitlines()
        assert "touch .venv/.tags-installed" in done.stdout.splitlines()
