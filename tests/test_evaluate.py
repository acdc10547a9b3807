"""evaluate.py: metrics against hand-computed values and sklearn, run selection, text/JSON, figures, PCA."""
import json
import re

import numpy as np
import pytest
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.metrics import classification_report, top_k_accuracy_score

import evaluate

GENRES = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]

# Six test clips, hand-made so that every rule shows: ties (rows 1, 3, 4), a class never predicted
# (2), a predicted class absent from the test set (8), and classes absent altogether (3..7).
HAND_LABELS = np.array([0, 0, 1, 1, 2, 9])
HAND_SCORES = np.zeros((6, 10), dtype=np.float32)
for row, entries in enumerate([{0: .7, 1: .2, 2: .1},
                               {0: .4, 1: .4, 5: .2},          # tie 0/1 -> class 1 ranks first
                               {1: .6, 3: .4},
                               {8: .5, 0: .25, 1: .25},        # tie 0/1 -> ranks 8, 1, 0
                               {0: .5, 3: .2, 4: .2, 2: .1},   # ranks 0, 4, 3, 2: true 2 is 4th
                               {9: .9, 0: .1}]):
    for c, v in entries.items():
        HAND_SCORES[row, c] = v
# By hand: predicted (rank 0) = 0, 1, 1, 8, 0, 9.
HAND_TOPK = {1: 3 / 6, 2: 5 / 6, 3: 5 / 6}
HAND_PRECISION = [1 / 2, 1 / 2, 0, 0, 0, 0, 0, 0, 0, 1]
HAND_RECALL = [1 / 2, 1 / 2, 0, 0, 0, 0, 0, 0, 0, 1]


def write_run(root, data, model, split, preset, seed, scores, labels, *, kind="probs", history=True,
              final=False, complete=True, created="2025-01-01T00:00:00", stopped_early=False, config_hash="h1"):
    """A run folder in run_all.py's format."""
    path = root / data / model / f"{split}-{preset}-seed{seed}"
    path.mkdir(parents=True)
    epochs = 6
    config = {"model": model, "split": split, "preset": preset, "seed": seed, "data_name": data,
              "data": {"data_name": data, "config_hash": config_hash}, "versions": {}, "epochs_run": 4 if stopped_early else epochs,
              "stopped_early": stopped_early, "final_epochs": 4 if final else None, "device": "cpu",
              "threads": 2, "wall_seconds": 1.0, "n_train": 10, "n_val": 2, "n_test": len(labels),
              "test": {"top1": None, "top2": None, "top3": None}, "finished": created, "extra_key": 1}
    (path / "config.json").write_text(json.dumps(config))
    rows = ["epoch,train_loss,train_acc,val_acc,seconds"]
    for e in range(1, config["epochs_run"] + 1):
        val = "" if split == "r80" else f"{0.1 + 0.05 * e + 0.01 * seed:.3f}"
        rows.append(f"{e},{2.3 / e:.4f},{0.1 + 0.12 * e + 0.01 * seed:.3f},{val},1.5")
    if history:
        (path / "history.csv").write_text("\n".join(rows) + "\n")
    if final:
        (path / "history_final.csv").write_text(
            "\n".join(["epoch,train_loss,train_acc,val_acc,seconds"]
                      + [f"{e},{2.0 / e:.4f},{0.15 + 0.1 * e:.3f},,1.5" for e in range(1, 5)]) + "\n")
    np.savez(path / "predictions.npz", **{kind: scores.astype(np.float32)}, labels=labels.astype(np.int64),
             files=np.array([f"{GENRES[c]}/{GENRES[c]}.{i:05d}.wav" for i, c in enumerate(labels)]),
             classes=np.array(GENRES))
    if complete:
        (path / "COMPLETE").write_text("")
    return path


def random_run(root, rng_seed, n=40, **kw):
    rng = np.random.default_rng(rng_seed)
    labels = rng.integers(0, 10, n)
    probs = rng.dirichlet(np.ones(10), n)
    probs[np.arange(n), labels] += rng.uniform(0, 0.4, n)   # better than chance, not perfect
    return write_run(root, scores=probs / probs.sum(1, keepdims=True), labels=labels, **kw)


@pytest.fixture
def runs(tmp_path):
    """Three cnn2d seeds, an incomplete fourth, an older tiny run, an SVM, a retrained cnn1d_raw,
    and an older run on other data."""
    root = tmp_path / "runs"
    for seed in range(3):
        random_run(root, seed, data="synthetic", model="cnn2d", split="r80", preset="quick", seed=seed,
                   created=f"2025-03-0{seed + 1}T10:00:00", stopped_early=seed == 1)
    random_run(root, 99, data="synthetic", model="cnn2d", split="r80", preset="quick", seed=3, complete=False,
               created="2025-03-09T10:00:00")
    random_run(root, 7, data="synthetic", model="cnn2d", split="r80", preset="tiny", seed=0,
               created="2025-02-01T10:00:00")
    random_run(root, 5, data="synthetic", model="svm", split="r80", preset="quick", seed=0, kind="scores",
               history=False, created="2025-03-02T11:00:00")
    random_run(root, 6, data="synthetic", model="cnn1d_raw", split="r70", preset="quick", seed=0, final=True,
               stopped_early=True, created="2025-03-02T12:00:00")
    random_run(root, 8, data="gtzan", model="lstm", split="r80", preset="report", seed=0,
               created="2024-12-01T10:00:00")
    return root


# ---------------------------------------------------------------------------------------------- metrics

def test_top_k_hand_computed_with_ties():
    for k, expected in HAND_TOPK.items():
        assert evaluate.top_k_accuracy(HAND_LABELS, HAND_SCORES, k) == pytest.approx(expected)
        assert top_k_accuracy_score(HAND_LABELS, HAND_SCORES, k=k, labels=range(10)) == pytest.approx(expected)
    assert evaluate.rank_classes(HAND_SCORES)[:, 0].tolist() == [0, 1, 1, 8, 0, 9]


def test_top_k_matches_sklearn_on_heavy_ties():
    rng = np.random.default_rng(0)
    for trial in range(20):
        scores = rng.integers(0, 3, (30, 10)).astype(np.float32)   # many exact ties
        labels = rng.integers(0, 10, 30)
        for k in (1, 2, 3, 5):
            assert evaluate.top_k_accuracy(labels, scores, k) == \
                top_k_accuracy_score(labels, scores, k=k, labels=range(10))


def test_mean_std_ddof1():
    assert evaluate.mean_std([40.0, 50.0, 60.0]) == (50.0, 10.0)
    assert evaluate.mean_std([42.0]) == (42.0, None)
    mean, std = evaluate.mean_std([[0.0, 1.0], [1.0, 1.0]])
    assert mean == [0.5, 1.0] and std == pytest.approx([np.sqrt(0.5), 0.0])


def test_evaluate_group_hand_computed(tmp_path):
    write_run(tmp_path, "synthetic", "cnn2d", "r80", "quick", 0, HAND_SCORES, HAND_LABELS)
    (group,) = evaluate.select_groups(evaluate.find_runs(tmp_path))
    r = evaluate.evaluate_group(group)
    for k, expected in HAND_TOPK.items():
        assert r["topk_percent"][f"top{k}"] == {"mean": pytest.approx(100 * expected), "std": None,
                                                "per_seed": [pytest.approx(100 * expected)]}
    assert r["per_class"]["precision"] == pytest.approx(HAND_PRECISION)
    assert r["per_class"]["recall"] == pytest.approx(HAND_RECALL)
    cm = np.zeros((10, 10), int)
    for t, p in zip(HAND_LABELS, [0, 1, 1, 8, 0, 9]):
        cm[t, p] += 1
    assert r["confusion"] == cm.tolist()
    assert r["classification_report"]["accuracy"] == pytest.approx(0.5)
    assert r["classification_report"]["disco"]["support"] == 0
    assert r["report"] == {"top1": 41, "top2": 59, "top3": 74}


# ---------------------------------------------------------------------------------------------- runs

def test_selection_pools_seeds_never_presets_or_data(runs):
    all_runs = evaluate.find_runs(runs)
    assert all((r.path / "COMPLETE").exists() for r in all_runs)
    assert not any(r.seed == 3 for r in all_runs)                         # incomplete: ignored
    groups = {(g.model, g.split): g for g in evaluate.select_groups(all_runs)}
    assert set(groups) == {("cnn1d_raw", "r70"), ("cnn2d", "r80"), ("svm", "r80")}   # newest data only
    cnn2d = groups[("cnn2d", "r80")]
    assert (cnn2d.data, cnn2d.preset, [r.seed for r in cnn2d.runs]) == ("synthetic", "quick", [0, 1, 2])
    assert cnn2d.other_presets == ["tiny"]
    (tiny,) = evaluate.select_groups(all_runs, model="cnn2d", preset="tiny")
    assert [r.seed for r in tiny.runs] == [0] and tiny.preset == "tiny"
    (lstm,) = evaluate.select_groups(all_runs, data="gtzan")
    assert (lstm.model, lstm.data, lstm.preset) == ("lstm", "gtzan", "report")


def test_runs_on_other_features_are_set_aside(tmp_path):
    random_run(tmp_path, 0, data="synthetic", model="svm", split="r80", preset="quick", seed=0, kind="scores",
               history=False, config_hash="old", created="2025-01-01T00:00:00")
    random_run(tmp_path, 1, data="synthetic", model="svm", split="r80", preset="quick", seed=1,
                       kind="scores", history=False, config_hash="new", created="2025-02-01T00:00:00")
    (group,) = evaluate.select_groups(evaluate.find_runs(tmp_path))
    assert [r.seed for r in group.runs] == [1] and group.set_aside == 1


def test_several_seeds_mean_std_and_per_seed(runs):
    (group,) = evaluate.select_groups(evaluate.find_runs(runs), model="cnn2d")
    r = evaluate.evaluate_group(group)
    per_seed = []
    for run in group.runs:
        with np.load(run.path / "predictions.npz") as z:
            per_seed.append(100 * top_k_accuracy_score(z["labels"], z["probs"], k=2, labels=range(10)))
    top2 = r["topk_percent"]["top2"]
    assert top2["per_seed"] == pytest.approx(per_seed)
    assert top2["mean"] == pytest.approx(np.mean(per_seed))
    assert top2["std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert np.sum(r["confusion"]) == 3 * 40


# ---------------------------------------------------------------------------------------------- text / JSON

def parse_text(text):
    """Numbers back from the report-style text of one group."""
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("Classification report")) + 3
    report = {}
    for line in lines[start:start + 10]:
        name, p, r, f1, s = line.split()
        report[name] = (float(p), float(r), float(f1), int(s))
    per_class = {m[1]: (float(m[2]), float(m[3])) for m in
                 re.finditer(r"Precision for (\w+) is: ([\d.]+).*recall for \w+ is: ([\d.]+)", text)}
    head = next(i for i, l in enumerate(lines) if l.startswith("Confusion matrix")) + 2
    confusion = [[int(v) for v in l.split()[1:]] for l in lines[head:head + 10]]
    topk = {int(m[1]): float(m[2]) for m in re.finditer(r"^top-(\d): ([\d.]+)", text, re.M)}
    return report, per_class, confusion, topk


def test_text_parses_back_to_the_json_numbers(runs, tmp_path, capsys):
    args = ["--runs", str(runs), "--out", str(tmp_path / "fig"), "--model", "cnn2d"]
    assert evaluate.main(args) == 0
    text = capsys.readouterr().out
    assert evaluate.main(args + ["--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["groups"]
    report, per_class, confusion, topk = parse_text(text)
    for name in GENRES:
        row = result["classification_report"][name]
        assert report[name] == (round(row["precision"], 2), round(row["recall"], 2), round(row["f1-score"], 2),
                                row["support"])
        i = GENRES.index(name)
        assert per_class[name] == (round(result["per_class"]["precision"][i], 2),
                                   round(result["per_class"]["recall"][i], 2))
    assert confusion == result["confusion"]
    assert topk == {k: round(result["topk_percent"][f"top{k}"]["mean"], 2) for k in (1, 2, 3)}
    assert "preset 'quick' on data 'synthetic'" in text and "per seed: seed0" in text
    assert "vs report 41 %" in text


def test_classification_report_text_is_sklearns(tmp_path):
    write_run(tmp_path, "synthetic", "cnn2d", "r80", "quick", 0, HAND_SCORES, HAND_LABELS)
    r = evaluate.evaluate_group(evaluate.select_groups(evaluate.find_runs(tmp_path))[0])
    expected = classification_report(HAND_LABELS, [0, 1, 1, 8, 0, 9], labels=range(10), target_names=GENRES,
                                     digits=2, zero_division=0)
    assert r["classification_report_text"] == expected
    assert expected in evaluate.format_group(r)


def test_json_round_trips(runs, tmp_path, capsys):
    assert evaluate.main(["--runs", str(runs), "--out", str(tmp_path / "fig"), "--all", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    groups = evaluate.select_groups(evaluate.find_runs(runs))
    expected = [evaluate.evaluate_group(g) for g in groups]
    for got, want in zip(payload["groups"], expected):
        got = dict(got)
        assert got.pop("figures")
        assert got == json.loads(json.dumps(want))
    assert [g["model"] for g in payload["groups"]] == ["cnn1d_raw", "cnn2d", "svm"]


def test_all_table_lists_ours_beside_report(runs, tmp_path, capsys):
    assert evaluate.main(["--runs", str(runs), "--out", str(tmp_path / "fig"), "--all"]) == 0
    out = capsys.readouterr().out
    row = next(l for l in out.splitlines() if l.startswith("| cnn2d"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:5] == ["cnn2d", "r80", "quick", "synthetic", "3"] and cells[6] == "41"
    assert re.fullmatch(r"[\d.]+ ± [\d.]+", cells[5])
    assert re.search(r"\| lstm +\| r70 +\| not run", out)
    assert "python run_all.py --models cnn1d_mel,lstm,svm400" in out


def test_no_run_says_which_command(tmp_path, capsys):
    assert evaluate.main(["--runs", str(tmp_path / "none"), "--model", "cnn2d", "--split", "r80",
                          "--out", str(tmp_path / "fig")]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "python run_all.py --models cnn2d --split r80" in out[0]


def test_bad_input_is_one_line(runs, tmp_path, capsys):
    (runs / "synthetic" / "svm" / "r80-quick-seed0" / "predictions.npz").write_bytes(b"not a zip")
    assert evaluate.main(["--runs", str(runs), "--model", "svm", "--out", str(tmp_path / "fig")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "predictions.npz" in err[0] and "Traceback" not in err[0]


# ---------------------------------------------------------------------------------------------- figures

def assert_png(path, min_size=(300, 300)):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
        assert np.asarray(im.convert("L")).std() > 5   # something drawn, not a blank canvas


def test_figures_written(runs, tmp_path, capsys):
    out = tmp_path / "fig"
    assert evaluate.main(["--runs", str(runs), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["confusion_cnn1d_raw_r70.png", "confusion_cnn2d_r80.png", "confusion_svm_r80.png",
                     "curves_cnn1d_raw_r70.png", "curves_cnn2d_r80.png"]     # svm: no history, no curves
    for name in names:
        assert_png(out / name)
    assert "figures: " in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- PCA

def test_pca_matches_sklearn():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(30, 1, 1, 1)) * rng.normal(size=(1, 5, 6, 3))   # a strong first component
    images = np.clip(128 + 60 * base + rng.normal(scale=20, size=(30, 5, 6, 3)), 0, 255).astype(np.uint8)
    scores, variance, total = evaluate.pca_scores(images, chunk_features=7)   # chunks that split pixels
    x = images.reshape(30, -1) / 255.0
    ref = PCA(n_components=2, svd_solver="full").fit(x)
    assert variance == pytest.approx(ref.explained_variance_, rel=1e-4)
    assert variance / total == pytest.approx(ref.explained_variance_ratio_, rel=1e-4)
    assert total == pytest.approx(x.var(axis=0, ddof=1).sum(), rel=1e-5)
    ref_scores = ref.transform(x)
    for j in range(2):   # components are defined up to sign
        sign = np.sign(scores[:, j] @ ref_scores[:, j])
        np.testing.assert_allclose(sign * scores[:, j], ref_scores[:, j], atol=1e-4)


def test_pca_figure_from_cache(tmp_path, capsys):
    cache = tmp_path / "cache" / "synthetic"
    cache.mkdir(parents=True)
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(10), 4)
    # Smaller than the cache's 400x400 so the float64 sklearn reference stays quick; same code path.
    images = (rng.integers(0, 60, (40, 64, 64, 3)) + 19 * labels[:, None, None, None]).astype(np.uint8)
    np.save(cache / "img400.npy", images)
    np.save(cache / "labels.npy", labels)
    (cache / "manifest.json").write_text(json.dumps({"data_name": "synthetic", "classes": GENRES, "n": 40}))
    out = tmp_path / "fig"
    assert evaluate.main(["--pca", "--cache", str(cache), "--out", str(out), "--runs", str(tmp_path / "r"),
                          "--json"]) == 0
    pca = json.loads(capsys.readouterr().out)["pca"]
    ref = PCA(n_components=2).fit(images.reshape(40, -1).astype(np.float64) / 255)
    assert pca["pve_percent"] == pytest.approx(100 * ref.explained_variance_ratio_.sum(), rel=1e-4)
    assert pca["data_name"] == "synthetic"
    assert_png(out / "pca.png")
