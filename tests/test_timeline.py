"""evaluation/timeline.py: the PNG of one file's genre over time, from synthetic ``--segments`` records."""
import time

import numpy as np
import pytest
from PIL import Image

from evaluation import timeline

GENRES = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]


def _top(probabilities, names, k, item="genre"):
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [{item: names[i], "probability": round(float(probabilities[i]), 6)} for i in order]


def make_record(parts, names=GENRES, segment_s=3.0, k=3, item="genre", seed=0):
    """A ``predict.py --segments`` record: ``parts`` [(class, seconds)] one after another, each cut into
    ``segment_s`` segments whose most probable class is the part's."""
    rng = np.random.default_rng(seed)
    segments, t, total = [], 0.0, np.zeros(len(names))
    for name, seconds in parts:
        stop = t + seconds
        while t < stop - 1e-9:
            end = min(t + segment_s, stop)
            logits = rng.normal(size=len(names))
            logits[names.index(name)] += 4.0
            p = np.exp(logits) / np.exp(logits).sum()
            total += p * (end - t)
            segments.append({"start_s": round(t, 3), "end_s": round(end, 3), "top": _top(p, names, k, item)})
            t = end
    top = _top(total / total.sum(), names, k, item)
    record = {"file": "/music/mix.wav", "top": top, "model": "gtzan/best/all-quick-seed0",
              "duration_s": round(t, 3), "segments": segments}
    return {"genre": top[0]["genre"], **record} if item == "genre" else record


def _png(path):
    with Image.open(path) as image:
        image.verify()  # a whole, valid PNG
    with Image.open(path) as image:
        return image.format, image.size


def test_three_genres_make_a_png_written_atomically(tmp_path):
    path = tmp_path / "out" / "mix.png"  # its folder does not exist yet
    timeline.draw(make_record([("blues", 30), ("jazz", 30), ("rock", 30)]), path, GENRES)
    fmt, (width, height) = _png(path)
    assert fmt == "PNG" and 1100 <= width <= 1500 and 300 <= height <= 1000
    assert [p.name for p in path.parent.iterdir()] == ["mix.png"]  # no temporary file left


def test_a_failed_write_keeps_the_old_picture(tmp_path, monkeypatch):
    path = tmp_path / "mix.png"
    path.write_bytes(b"old")

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(timeline.Figure, "savefig", broken)
    with pytest.raises(OSError):
        timeline.draw(make_record([("blues", 9)]), path, GENRES)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["mix.png"]


def test_rows_most_probable_first_and_the_note_on_unlisted_genres():
    fig = timeline._timeline_figure(make_record([("jazz", 60), ("rock", 30)]), GENRES)
    heat = fig.axes[1]
    rows = [t.get_text() for t in heat.get_yticklabels()]
    assert sorted(rows) == GENRES and rows[:2] == ["jazz", "rock"]
    assert "top 3 of 10 genres" in heat.get_xlabel()
    complete = timeline._timeline_figure(make_record([("jazz", 9)], k=10), GENRES)
    assert "top" not in complete.axes[1].get_xlabel()  # every genre listed: nothing to explain


def test_without_classes_the_rows_are_the_genres_named():
    fig = timeline._timeline_figure(make_record([("disco", 30)], k=1), None)
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == ["disco"]


def test_later_segments_are_drawn_over_earlier_ones():
    # the last window overlaps the one before it, as some models' final windows do; a gap stays empty
    starts, ends = np.array([0.0, 3.0, 6.0, 7.5, 12.0]), np.array([3.0, 6.0, 9.0, 10.5, 13.0])
    edges, owner = timeline._columns(starts, ends)
    np.testing.assert_array_equal(edges, [0, 3, 6, 7.5, 9, 10.5, 12, 13])
    np.testing.assert_array_equal(owner, [0, 1, 2, 3, 3, -1, 4])


def test_time_axis_labels_and_spacing():
    assert timeline.clock(0) == "0:00" and timeline.clock(183.2) == "3:03"
    assert timeline.clock(3725, hours=True) == "1:02:05" and timeline.clock(59.6, hours=True) == "0:01:00"
    for end, last in ((30, "0:30"), (90, "1:30"), (183.2, "3:00"), (7200, "2:00:00"), (3 * 3600, "3:00:00")):
        ax = timeline.Figure().add_subplot()
        timeline._time_axis(ax, end)
        ticks = [t for t in ax.get_xticks() if 0 <= t <= end]
        assert 4 <= len(ticks) <= timeline.MAX_TICKS + 1  # neither crowded nor bare
        assert ax.xaxis.get_major_formatter()(ticks[-1], None) == last


def test_a_two_hour_mix_renders_quickly(tmp_path):
    parts = [(GENRES[i], 600.0) for i in (9, 6, 3, 7, 4, 8, 9, 5, 1, 0, 2, 9)]
    record = make_record(parts, seed=1)
    assert len(record["segments"]) == 2400
    began = time.perf_counter()
    timeline.draw(record, tmp_path / "mix.png", GENRES)
    assert time.perf_counter() - began < 5.0
    assert _png(tmp_path / "mix.png")[0] == "PNG"


def test_tags_show_the_most_probable_tags_that_reach_a_top(tmp_path):
    tags = [f"tag{i:02d}" for i in range(50)]
    record = make_record([(tags[i], 9.0) for i in range(0, 40, 2)], names=tags, k=3, item="tag", seed=2)
    assert "genre" not in record
    fig = timeline._timeline_figure(record, tags)
    rows = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    named = {e["tag"] for s in record["segments"] for e in s["top"]}
    assert len(rows) == timeline.MAX_TAG_ROWS < len(named) and set(rows) <= named
    assert rows[:3] == [e["tag"] for e in record["top"]]
    assert f"the {timeline.MAX_TAG_ROWS} most probable of the {len(named)} tags" in fig.axes[1].get_xlabel()
    timeline.draw(record, tmp_path / "tags.png", tags)
    assert _png(tmp_path / "tags.png")[0] == "PNG"


def test_silent_file_gives_a_figure_that_says_so(tmp_path):
    record = {"file": "quiet.wav", "genre": "silent", "silent": True, "peak_dbfs": -72.3,
              "model": "gtzan/best/all-quick-seed0", "duration_s": 31.0}
    timeline.draw(record, tmp_path / "quiet.png", GENRES)
    assert _png(tmp_path / "quiet.png")[0] == "PNG"


def test_records_without_segments_are_refused(tmp_path):
    record = make_record([("rock", 30)])
    del record["segments"]
    with pytest.raises(ValueError, match="^no segments: run predict.py with --segments$"):
        timeline.draw(record, tmp_path / "x.png", GENRES)
    with pytest.raises(ValueError, match="failed: mix.wav: too short"):
        timeline.draw({"file": "mix.wav", "error": "mix.wav: too short"}, tmp_path / "x.png", GENRES)
    assert not list(tmp_path.iterdir())
