"""predict.py into the music library, with ``best`` trained on real GTZAN openings: --segments (genre over
time), --min-probability (unknown), silence, --plot, and --write-tags / --yes / --overwrite / --undo on
real files (features.tags itself is tested in tests/test_tags.py)."""

import json

import numpy as np
import pytest
import soundfile as sf

import predict

pytest.importorskip("musicnn", reason="the musicnn wheel is not installed (make setup)")


@pytest.fixture(scope="module")
def real_best(shared_data, tmp_path_factory):
    """The runs root of ``best`` (preset tiny) trained on all 80 real openings of ``gtzan_15s``."""
    import run_all

    tmp = tmp_path_factory.mktemp("real_best")
    args = ["--data", str(shared_data / "gtzan_15s"), "--cache", str(tmp / "cache"), "--runs", str(tmp / "runs"),
            "--models", "best", "--preset", "tiny", "--split", "all"]
    assert run_all.main(args) == 0
    return tmp / "runs"


def run(capsys, *argv) -> tuple:
    code = predict.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def records(capsys, runs, *argv) -> list:
    code, out, err = run(capsys, "--runs", runs, "--jsonl", *argv)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def three_genres(shared_data, tmp_path):
    """Three real 30-s clips of three genres, and their concatenation (90 s)."""
    clips = [shared_data / "gtzan_sample" / g / f"{g}.00000.wav" for g in ("classical", "metal", "hiphop")]
    y = np.concatenate([sf.read(c, dtype="float32")[0][:22050 * 30] for c in clips])
    mix = tmp_path / "mix.wav"
    sf.write(mix, y, 22050)
    return clips, mix


def test_segments_inside_each_part_vote_for_the_genre_of_that_clip_alone(real_best, three_genres, capsys):
    clips, mix = three_genres
    alone = [r["genre"] for r in records(capsys, real_best, *clips)]
    (whole,) = records(capsys, real_best, "--segments", mix)
    segments = whole["segments"]
    assert len(segments) == 30 and segments[0]["start_s"] == 0 and segments[-1]["end_s"] <= 90
    assert all(s["end_s"] - s["start_s"] == pytest.approx(2.992, abs=1e-3) for s in segments)
    for part, genre in enumerate(alone):
        inside = [s["top"][0]["genre"] for s in segments if part * 30 <= s["start_s"] < (part + 1) * 30]
        assert max(set(inside), key=inside.count) == genre, (part, inside)
    (longer,) = records(capsys, real_best, "--segments", "9", mix)
    assert [s["start_s"] for s in longer["segments"][:3]] == [0, pytest.approx(8.976), pytest.approx(17.952)]
    code, out, _ = run(capsys, "--runs", real_best, "--segments", "--", mix)
    assert code == 0 and "    0:00-0:02  " in out and "    1:26-1:29  " in out


def test_min_probability_gives_unknown_and_silence_is_said(real_best, three_genres, tmp_path, capsys):
    clips, _ = three_genres
    (rec,) = records(capsys, real_best, "--min-probability", "1", clips[0])
    assert rec["genre"] == "unknown" and len(rec["top"]) == 3
    (rec,) = records(capsys, real_best, "--min-probability", "0", clips[0])
    assert rec["genre"] == rec["top"][0]["genre"]
    quiet, silent = tmp_path / "quiet.wav", tmp_path / "silent.wav"
    y = sf.read(clips[0], dtype="float32")[0][:22050 * 5]
    sf.write(quiet, y / np.abs(y).max() * 10 ** (-70 / 20), 22050)
    sf.write(silent, np.zeros(22050 * 5, np.float32), 22050)
    quiet_rec, silent_rec = records(capsys, real_best, quiet, silent)
    assert quiet_rec["genre"] == "silent" and quiet_rec["peak_dbfs"] == pytest.approx(-70, abs=0.5)
    assert "top" not in quiet_rec and silent_rec["genre"] == "silent" and silent_rec["peak_dbfs"] is None
    code, out, _ = run(capsys, "--runs", real_best, "--min-probability", "1", "--", clips[0], silent)
    assert code == 0 and "  unknown (no genre is probable enough):" in out and "  silent (no sound at all)" in out
    with pytest.raises(SystemExit) as exit_:
        predict.main(["--runs", str(real_best), "--min-probability", "1.5", str(clips[0])])
    assert exit_.value.code == 2 and "1.5: a probability is between 0 and 1" in capsys.readouterr().err


def test_plot_draws_a_timeline_per_file(real_best, three_genres, tmp_path, capsys):
    from PIL import Image

    _, mix = three_genres
    code, _, err = run(capsys, "--runs", real_best, "--plot", tmp_path / "pics", mix)
    assert code == 0, err
    (png,) = (tmp_path / "pics").iterdir()
    assert png.name == "mix.png" and Image.open(png).size[0] > 600


@pytest.fixture
def library(three_genres, tmp_path):
    """The three clips as MP3, FLAC and WAV files in a folder, each with a title."""
    mutagen = pytest.importorskip("mutagen", reason="mutagen is not installed (make tags)")
    from mutagen.flac import FLAC
    from mutagen.id3 import ID3, TIT2

    clips, _ = three_genres
    lib = tmp_path / "lib"
    lib.mkdir()
    made = []
    for clip, (fmt, ext) in zip(clips, [("MP3", "mp3"), ("FLAC", "flac"), ("WAV", "wav")]):
        y, sr = sf.read(clip, dtype="float32")
        made.append(lib / f"{clip.stem}.{ext}")
        sf.write(made[-1], y[:sr * 10], sr, format=fmt)
    tags = ID3()
    tags.add(TIT2(encoding=3, text="A title"))
    tags.save(made[0])
    flac = FLAC(made[1])
    flac["TITLE"] = "Another title"
    flac.save()
    assert mutagen.File(made[0]) is not None
    return made


def genre_of(path):
    from features import tags

    return tags.read_genre(path)


def test_write_tags_dry_run_write_rerun_keep_overwrite_and_undo(real_best, library, tmp_path, capsys):
    before = {p: p.read_bytes() for p in library}
    samples = {p: sf.read(p)[0] for p in library}
    code, out, err = run(capsys, "--runs", real_best, "--write-tags", "--min-probability", "0", *library)
    assert code == 0 and "a dry run: nothing was written" in err and "3 to write" in err
    assert out.count('tag: (none) -> "') == 3
    assert {p: p.read_bytes() for p in library} == before  # the dry run changed nothing

    code, out, err = run(capsys, "--runs", real_best, "--write-tags", "--yes", "--min-probability", "0", *library)
    assert code == 0 and "3 written" in err
    written = {p: genre_of(p) for p in library}
    assert all(len(g.genres) == 1 and json.loads(g.source)["tool"] == "gtzan-genre" for g in written.values())
    from mutagen.id3 import ID3

    assert str(ID3(library[0])["TIT2"]) == "A title"  # the other tags are kept

    code, _, err = run(capsys, "--runs", real_best, "--write-tags", "--yes", "--min-probability", "0", *library)
    assert code == 0 and "3 already written" in err
    assert {p: genre_of(p) for p in library} == written  # a rerun recognises its own tags

    from features import tags

    tags.write_genre(library[2], ("Polka",), None)  # a person's genre
    code, out, err = run(capsys, "--runs", real_best, "--write-tags", "--yes", "--min-probability", "0", library[2])
    assert "1 kept (set by hand)" in err and genre_of(library[2]).genres == ("Polka",)
    code, out, err = run(capsys, "--runs", real_best, "--write-tags", "--yes", "--overwrite", "--min-probability",
                         "0", "--genres", "2", library[2])
    assert "1 written" in err
    assert len(genre_of(library[2]).genres) == 2 and json.loads(genre_of(library[2]).source)["previous"] == ["Polka"]

    code, out, _ = run(capsys, "--undo", *library)  # a dry run
    assert code == 0 and out.count(" -> ") == 3 and genre_of(library[0]) == written[library[0]]
    code, out, err = run(capsys, "--undo", "--yes", *library)
    assert code == 0 and "3 restored" in err
    assert genre_of(library[0]) == tags.Genre((), None) and genre_of(library[2]) == tags.Genre(("Polka",), None)
    for p in library:  # the audio is the same after write, overwrite and undo
        assert np.array_equal(sf.read(p)[0], samples[p])


def test_unknown_and_unreadable_files_are_not_tagged(real_best, library, tmp_path, capsys):
    code, out, err = run(capsys, "--runs", real_best, "--write-tags", "--yes", "--min-probability", "1", library[0])
    assert code == 0 and "1 not tagged" in err and genre_of(library[0]).genres == ()
    au = tmp_path / "clip.au"
    sf.write(au, sf.read(library[2], dtype="float32")[0], 22050, format="AU")
    code, _, err = run(capsys, "--runs", real_best, "--write-tags", "--yes", "--min-probability", "0", au)
    lines = [line for line in err.splitlines() if not line.startswith("predict: note")]
    assert code == 1 and any(str(au) in line and "cannot write tags" in line for line in lines)
    assert "1 failed" in err


def test_write_tags_with_out_resumes_without_redoing_tagged_files(real_best, library, tmp_path, capsys):
    out = tmp_path / "genres.jsonl"
    args = ["--runs", real_best, "--write-tags", "--yes", "--min-probability", "0", "--out", out, *library]
    code, _, err = run(capsys, *args)
    assert code == 0 and "3 classified" in err
    code, _, err = run(capsys, *args)
    assert code == 0 and "0 classified, 3 skipped" in err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 3 and all(line["tag"]["action"] == "write" for line in lines)


def test_without_mutagen_write_tags_is_one_line(real_best, library, capsys, monkeypatch):
    from features import tags

    def missing():
        raise tags.MutagenMissing()

    monkeypatch.setattr(tags, "require_mutagen", missing)
    code, out, err = run(capsys, "--runs", real_best, "--write-tags", library[0])
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and "make tags" in err


def test_svm_scores_cannot_be_thresholded(trained, tmp_path, capsys):
    _, runs = trained
    clip = tmp_path / "a.wav"
    sf.write(clip, np.random.default_rng(0).uniform(-0.3, 0.3, 22050 * 3).astype(np.float32), 22050)
    code, _, err = run(capsys, "--runs", runs, "--min-probability", "0.5", clip)
    assert code == 2 and "decision scores" in err
