"""features.dataset: discovery order, layouts, labels, safe extraction, MD5 validation."""
import io
import json
import shutil
import tarfile

import numpy as np
import pytest
import soundfile as sf

from features import dataset
from features.dataset import GENRES, DataError, find_data, list_tracks, validate_main


def make_tree(root, layout):
    """``layout``: {genre: [file names]}; writes tiny 16-bit WAVs (or junk for non-audio names)."""
    for genre, names in layout.items():
        (root / genre).mkdir(parents=True, exist_ok=True)
        for name in names:
            sf.write(root / genre / name, np.zeros(10, np.int16), 22050, format="WAV",
                     subtype="PCM_16")
    return root


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    """No $GTZAN_DIR and defaults pointing into an empty tmp folder."""
    monkeypatch.delenv("GTZAN_DIR", raising=False)
    monkeypatch.setattr(dataset, "DEFAULT_DATA", tmp_path / "defaults" / "gtzan")
    monkeypatch.setattr(dataset, "DEFAULT_ARCHIVE", tmp_path / "defaults" / "genres.tar.gz")
    return tmp_path / "defaults"


def test_genres_are_alphabetical_labels():
    assert GENRES == tuple(sorted(GENRES)) and len(GENRES) == 10


def test_sample_tracks(shared_data):
    root = find_data(shared_data / "gtzan_sample")
    tracks = list_tracks(root)
    assert len(tracks) == 29
    assert [t.relpath for t in tracks] == sorted(t.relpath for t in tracks)
    first = tracks[0]
    assert (first.relpath, first.genre, first.label, first.track_id) == (
        "blues/blues.00000.wav", "blues", 0, "blues.00000")
    assert first.path.is_absolute() and first.path.is_file()
    assert all(GENRES[t.label] == t.genre and t.track_id.startswith(t.genre) for t in tracks)
    assert np.bincount([t.label for t in tracks]).tolist() == [1, 1, 8, 2, 2, 1, 3, 5, 5, 1]


def test_order_data_then_env_then_default(no_env, tmp_path, monkeypatch):
    assert find_data() is None
    default = make_tree(no_env / "gtzan" / "genres", {"rock": ["rock.00000.wav"]})
    assert find_data() == default
    env = make_tree(tmp_path / "env", {"pop": ["pop.00000.wav"]})
    monkeypatch.setenv("GTZAN_DIR", str(env))
    assert find_data() == env
    given = make_tree(tmp_path / "given" / "genres_original", {"jazz": ["jazz.00054.wav"]})
    assert find_data(tmp_path / "given") == given


def test_given_paths_that_hold_nothing_are_errors(no_env, tmp_path, monkeypatch):
    with pytest.raises(DataError, match="nowhere: not found"):
        find_data(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no genre folders"):
        find_data(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="neither a folder nor"):
        find_data(tmp_path / "notes.txt")
    monkeypatch.setenv("GTZAN_DIR", str(tmp_path / "gone"))
    with pytest.raises(DataError, match=r"given by \$GTZAN_DIR"):
        find_data()


def test_layouts_and_ignored_files(tmp_path):
    root = make_tree(tmp_path / "genres", {"blues": ["blues.00000.au", "blues.00001.wav"],
                                           "metal": ["metal.00000.FLAC"]})
    (root / "blues" / "._blues.00000.au").write_bytes(b"resource fork")
    (root / "blues" / "notes.txt").write_text("not audio")
    (root / "bextract_single.mf").write_text("list file at the root")
    make_tree(root / "__MACOSX", {"x": ["blues.00000.wav"]})
    make_tree(root / "blues", {"nested": ["deep.wav"]})
    tracks = list_tracks(find_data(tmp_path))
    assert [(t.relpath, t.label) for t in tracks] == [
        ("blues/blues.00000.au", 0), ("blues/blues.00001.wav", 0), ("metal/metal.00000.FLAC", 1)]


def test_own_music_labels(tmp_path):
    root = make_tree(tmp_path / "mine", {"techno": ["a.mp3"], "ambient": ["b.wav", "c.wav"]})
    assert dataset.classes(root) == ("ambient", "techno")
    assert [(t.genre, t.label, t.track_id) for t in list_tracks(root)] == [
        ("ambient", 0, "b"), ("ambient", 0, "c"), ("techno", 1, "a")]
    subset = make_tree(tmp_path / "subset", {"rock": ["r.wav"], "jazz": ["j.wav"]})
    assert dataset.classes(subset) == ("jazz", "rock")  # exactly the folders present, GTZAN's order
    assert [t.label for t in list_tracks(subset)] == [0, 1]
    mixed = make_tree(tmp_path / "mixed", {"rock": ["r.wav"], "zouk": ["z.wav"], "blues": ["b.wav"],
                                           "afrobeat": ["a.wav"]})
    assert dataset.classes(mixed) == ("blues", "rock", "afrobeat", "zouk")  # GTZAN's first, then A-Z
    full = make_tree(tmp_path / "full", {g: [f"{g}.00000.wav"] for g in GENRES})
    assert dataset.classes(full) == GENRES


def test_one_track_under_two_labels_is_an_error_several_files_are_not(tmp_path):
    root = make_tree(tmp_path / "a", {"rock": ["x.wav"], "pop": ["x.mp3"]})
    with pytest.raises(DataError, match="track 'x' is under two labels \\(pop/x.mp3 and rock/x.wav\\)"):
        list_tracks(root)
    pool = make_tree(tmp_path / "b", {"blues": ["gtzan_2s__blues.00003.wav", "gtzan_15s__blues.00003.wav",
                                                "blues.00004.wav"]})
    assert [t.track_id for t in list_tracks(pool)] == ["blues.00004", "blues.00003", "blues.00003"]


def _tar(path, members):
    """Write a tar.gz of {name: bytes}."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _wav_bytes():
    buf = io.BytesIO()
    sf.write(buf, np.zeros(10, np.int16), 22050, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_archive_is_extracted_beside_it_once(tmp_path):
    archive = _tar(tmp_path / "genres.tar.gz", {"genres/pop/pop.00000.wav": _wav_bytes(),
                                                "genres/rock/rock.00000.wav": _wav_bytes()})
    root = find_data(archive)
    assert root == tmp_path / "gtzan" / "genres"
    assert [t.relpath for t in list_tracks(root)] == ["pop/pop.00000.wav", "rock/rock.00000.wav"]
    archive.unlink()  # a second call uses the extracted folder
    _tar(archive, {"genres/README.txt": b"no audio here"})
    assert find_data(archive) == root
    elsewhere = tmp_path / "elsewhere"
    with pytest.raises(DataError, match="holds no genre folders"):
        find_data(archive, extract_to=elsewhere)


def test_default_archive_is_used(no_env):
    no_env.mkdir()
    _tar(no_env / "genres.tar.gz", {"genres/pop/pop.00000.wav": _wav_bytes()})
    assert find_data() == no_env / "gtzan" / "genres"


@pytest.mark.parametrize("name,why", [("../evil.wav", "climbs out"),
                                      ("genres/../../evil.wav", "climbs out"),
                                      ("/tmp/evil.wav", "absolute path")])
def test_unsafe_archives_are_refused_and_leave_nothing(tmp_path, name, why):
    archive = _tar(tmp_path / "genres.tar.gz", {"genres/pop/pop.00000.wav": _wav_bytes(), name: b"x"})
    with pytest.raises(DataError, match=why):
        find_data(archive)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["genres.tar.gz"]
    assert not (tmp_path.parent / "evil.wav").exists()


def test_symlink_out_of_tree_is_refused(tmp_path):
    archive = tmp_path / "genres.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo("genres/pop/pop.00000.wav")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(DataError, match="cannot extract"):
        find_data(archive)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["genres.tar.gz"]


def test_corrupt_archive_is_one_line(tmp_path):
    archive = tmp_path / "genres.tar.gz"
    archive.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="genres.tar.gz: cannot extract") as e:
        find_data(archive)
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["genres.tar.gz"]


def test_validate_sample(shared_data, capsys):
    assert validate_main([str(shared_data / "gtzan_sample")]) == 1
    out = capsys.readouterr().out
    assert "verified      29" in out and "missing       971" in out
    assert "mismatched    0" in out and "extra         0" in out and "NOT OK" in out


def test_validate_detects_corruption_extras_misplacement(shared_data, tmp_path, capsys):
    root = tmp_path / "genres_original"
    shutil.copytree(shared_data / "gtzan_sample", root)
    pop = root / "pop" / "pop.00001.wav"
    data = bytearray(pop.read_bytes())
    data[1000] ^= 1
    pop.write_bytes(bytes(data))
    shutil.copy(root / "rock" / "rock.00000.wav", root / "rock" / "rock.00100.wav")
    (root / "disco" / "disco.00003.wav").rename(root / "jazz" / "disco.00003.wav")
    (root / "metal" / "metal.00004.wav").rename(root / "metal" / "metal.00004.au")

    v = dataset.verify(root, dataset.load_index())
    assert v.mismatched == ["jazz/disco.00003.wav: the index files it under disco/disco.00003.wav",
                            "pop/pop.00001.wav: MD5 differs from the index"]
    assert v.extra == ["rock/rock.00100.wav"]
    assert v.unverifiable == ["metal/metal.00004.au"]
    assert len(v.verified) == 26 and len(v.missing) == 971 and not v.ok

    assert validate_main([str(tmp_path), "--list"]) == 1
    out = capsys.readouterr().out
    assert "pop/pop.00001.wav: MD5 differs" in out and "rock/rock.00100.wav" in out
    assert "blues.00099" in out  # --list shows every missing id


def test_validate_passes_when_complete(shared_data, tmp_path, capsys):
    index = tmp_path / "index.json"
    tracks = json.loads((shared_data / "gtzan_index.json").read_text())["tracks"]
    present = {p.stem for p in (shared_data / "gtzan_sample").glob("*/*.wav")}
    index.write_text(json.dumps({"version": "1.0",
                                 "tracks": {k: v for k, v in tracks.items() if k in present}}))
    assert validate_main([str(shared_data / "gtzan_sample"), "--index", str(index)]) == 0
    assert "OK: every track verified" in capsys.readouterr().out


def test_validate_errors_exit_2(tmp_path, no_env, capsys):
    assert validate_main([]) == 2
    assert "no GTZAN data found" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    assert validate_main([str(tmp_path), "--index", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert "bad.json: not a mirdata-style index" in err and err.count("\n") == 1
