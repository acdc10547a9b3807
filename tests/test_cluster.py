"""The Ray engine (models/cluster.py) on a local 2-CPU Ray gives the local engine's records, in order;
the shards of ``out_dir`` are ``--out`` lines that ``done_in`` reads back. Skipped without Ray (`make
cluster`), except the one-line message saying how to install it."""

import importlib.util
import json
import sys

import pytest

from models import cluster, engine
from models.inference import UsageError
from models.resultlog import file_key


@pytest.fixture(scope="module")
def ray():
    """Ray, its local instance started by ``classify`` on 2 CPUs whatever this machine has; skips without it."""
    ray = pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cluster, "usable_cpus", lambda: 2)
        yield ray
    assert not ray.is_initialized(), "classify left the Ray it started running"


@pytest.fixture(scope="module")
def files(shared_data, tmp_path_factory) -> list:
    """20 real 2-3-s GTZAN excerpts over every genre, and one file that is not audio among them."""
    real = sorted((shared_data / "gtzan_2s").rglob("*.wav"))[::15][:20]
    broken = tmp_path_factory.mktemp("broken") / "broken.wav"
    broken.write_bytes(b"RIFF not audio")
    return real[:10] + [broken] + real[10:]


def svm_spec(trained) -> engine.Spec:
    _, runs_root = trained
    (run_dir,) = runs_root.glob("*/svm/*")
    return engine.Spec(run_dirs=(str(run_dir),), runs_root=str(runs_root))


def assert_same(local: list, remote: list) -> None:
    """The same files in the same order, the same genres (tags) and errors; numbers within 1e-5 (SVM
    scores relatively: the local engine's BLAS runs on 2 threads, an actor's on 1)."""
    assert [p for p, _ in remote] == [p for p, _ in local]
    for (_, ours), (_, theirs) in zip(local, remote):
        assert {k: v for k, v in theirs.items() if k != "top"} == {k: v for k, v in ours.items() if k != "top"}
        for mine, other in zip(ours.get("top", ()), theirs.get("top", ())):
            (name, number), = [(k, v) for k, v in mine.items() if isinstance(v, float)]
            assert {k: v for k, v in other.items() if k != name} == {k: v for k, v in mine.items() if k != name}
            assert other[name] == pytest.approx(number, rel=1e-5, abs=1e-5)


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where it is not installed
    with pytest.raises(UsageError) as err:
        cluster.require_ray()
    assert str(err.value) == cluster.RAY_MISSING
    assert "\n" not in cluster.RAY_MISSING and "make cluster" in cluster.RAY_MISSING
    assert "pip install -r requirements-cluster.txt" in cluster.RAY_MISSING


def test_done_in_reads_every_shard_a_result_beating_an_error_a_torn_line_left_out(tmp_path):
    key = {"size": 1, "mtime_ns": 2, "model_id": "m"}

    def line(name, **rest):
        return json.dumps({"file": name, **rest, "key": key}) + "\n"

    (tmp_path / "a.jsonl").write_text(line("x", error="bad") + line("y", error="bad") + line("w", top=[]))
    (tmp_path / "b.jsonl").write_text(line("x", top=[]) + line("w", error="bad") + line("z", top=[])[:-9])
    (tmp_path / "notes.txt").write_text("not a shard")
    expected = {"x": False, "y": True, "w": False}  # z: its line torn by a kill
    assert cluster.done_in(tmp_path) == {cluster.done_key(name, key): error for name, error in expected.items()}
    assert cluster.done_in(tmp_path / "none") == {}


def test_ray_gives_the_local_engines_records_in_order(ray, trained, files):
    spec = svm_spec(trained)
    local = list(engine.classify(engine.Classifier(spec), files, jobs=1))
    remote = list(cluster.classify(spec, files, batch_size=3))
    assert "error" in remote[10][1] and all("top" in r for _, r in remote[:10] + remote[11:])
    assert_same(local, remote)


@pytest.mark.skipif(not importlib.util.find_spec("musicnn"), reason="the musicnn wheel is not installed")
def test_ray_gives_the_local_engines_tags(ray, files):
    spec = engine.Spec(run_dirs=(), runs_root="runs", tags=True, top=5)
    local = list(engine.classify(engine.Classifier(spec), files[:5], jobs=1))
    assert_same(local, list(cluster.classify(spec, files[:5])))


def test_out_dir_shards_are_out_lines_and_resume(ray, trained, files, tmp_path):
    spec = svm_spec(trained)
    model_id = engine.Classifier(spec).model_id
    out = tmp_path / "shards"
    assert list(cluster.classify(spec, files[5:15], out_dir=out)) == []
    lines = [json.loads(line) for shard in sorted(out.glob("*.jsonl")) for line in shard.read_text().splitlines()]
    assert sorted(o["file"] for o in lines) == sorted(engine.display(f) for f in files[5:15])
    keys = {f: cluster.done_key(engine.display(f), file_key(f, model_id)) for f in files}
    done = cluster.done_in(out)
    assert [f for f in files if keys[f] in done] == files[5:15]
    assert [f for f in files if done.get(keys[f])] == [files[10]]  # the one error line
