"""models/patchcnn.py (the from-scratch patch CNN): shapes, the patch / tiling rule, normalisation, determinism, and that it learns."""
import json

import numpy as np
import pytest
import torch

from models import patchcnn

P = patchcnn.PATCH_FRAMES


@pytest.mark.parametrize("n", [3, 12])
def test_build_shapes(n):
    net, transform = patchcnn.build(n)
    net.eval()
    out = net(torch.zeros(5, 1, 128, P))
    assert out.shape == (5, n)
    assert torch.allclose(out.exp().sum(1), torch.ones(5), atol=1e-5)
    assert transform(np.zeros((2, 128, 300), np.float32)).shape == (2, 1, 128, 300)
    assert {"band_mean", "band_std"} <= set(net.state_dict())


def test_patches_cover_clip_edges():
    S = np.tile(np.arange(1292, dtype=np.float32), (128, 1))
    p = patchcnn.patches(S, 1292, 64)
    assert p.shape == (1 + -(-(1292 - P) // 64), 128, P)
    assert p[0, 0, 0] == 0 and p[-1, 0, -1] == 1291  # first frame and last valid frame
    assert patchcnn.patches(S, 300, 64)[-1, 0, -1] == 299  # frames past n_valid are never read
    assert patchcnn.patches(S, P, 64).shape == (1, 128, P)


def test_short_clip_is_tiled():
    S = np.tile(np.arange(1292, dtype=np.float32), (128, 1))
    p = patchcnn.patches(S, 87, 64)  # a 2-s excerpt
    assert p.shape == (1, 128, P)
    np.testing.assert_array_equal(p[0, 0], np.arange(P) % 87)


def test_train_batch_crops_within_valid_frames():
    mel = np.tile(np.arange(1292, dtype=np.float32), (3, 128, 1))
    aug = patchcnn.Augment(gain_db=0, freq_mask=0, time_mask=0, mixup_alpha=0)
    x, y = patchcnn.train_batch(mel, np.array([0, 1, 2]), np.array([0, 1, 2]), np.array([87, 128, 1292]),
                            np.random.default_rng(0), 3, aug)
    assert x.shape == (3 * aug.crops, 1, 128, P) and y.dtype == torch.int64
    frames = x[:, 0, 0].numpy()
    assert (frames[:aug.crops] < 87).all() and (frames[aug.crops:2 * aug.crops] == np.arange(P)).all()
    assert (np.diff(frames[-aug.crops:], axis=1) == 1).all()  # a 30-s clip: contiguous, never wrapped


def test_set_normalisation_uses_only_given_rows():
    rng = np.random.default_rng(0)
    mel = rng.normal(0, 1, (4, 128, 200)).astype(np.float32)
    mel[1] += 1000  # a row left out must not move the statistics
    mel[0, :, 100:] = -1000  # nor frames past a clip's valid length
    n_frames = np.array([100, 200, 200, 200])
    net, _ = patchcnn.build(10)
    patchcnn.set_normalisation(net, mel, np.array([2, 0]), n_frames, chunk=1)
    vals = np.concatenate([mel[0, :, :100], mel[2]], axis=1)
    np.testing.assert_allclose(net.band_mean.flatten(), vals.mean(1), atol=1e-4)
    np.testing.assert_allclose(net.band_std.flatten(), vals.std(1), rtol=1e-4)


def test_train_batch_is_deterministic():
    mel = np.random.default_rng(1).normal(-40, 10, (6, 128, 400)).astype(np.float32)
    args = (mel, np.array([0, 2, 5]), np.arange(6) % 3, np.array([400, 90, 300, 400, 130, 200]))
    for aug in (patchcnn.AUG, patchcnn.Augment(mixup_alpha=0.3)):
        x1, t1 = patchcnn.train_batch(*args, np.random.default_rng(7), 3, aug)
        x2, t2 = patchcnn.train_batch(*args, np.random.default_rng(7), 3, aug)
        assert torch.equal(x1, x2) and torch.equal(t1, t2)
        assert not torch.equal(x1, patchcnn.train_batch(*args, np.random.default_rng(8), 3, aug)[0])
    assert t1.shape == (6, 3) and torch.allclose(t1.sum(1), torch.ones(6))  # mixup: soft targets


def test_clip_log_probs_normalised():
    torch.manual_seed(0)
    net, _ = patchcnn.build(10)
    net.eval()
    S = np.random.default_rng(0).normal(-40, 10, (3, 128, 1292)).astype(np.float32)
    with torch.inference_mode():
        lp = patchcnn.clip_log_probs(net, S, np.array([1292, 87, 500]), max_patches=4)
    assert lp.shape == (3, 10)
    assert torch.allclose(lp.exp().sum(1), torch.ones(3), atol=1e-5)


def test_training_lowers_the_loss():
    """A few steps on a separable synthetic set: class c is loud in bands 30c..30c+30."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    labels = np.arange(12) % 3
    mel = rng.normal(-60, 3, (12, 128, 200)).astype(np.float32)
    for i, c in enumerate(labels):
        mel[i, 30 * c:30 * c + 30] += 30
    n_frames = np.array([200, 90, 150] * 4)
    net, _ = patchcnn.build(3)
    patchcnn.set_normalisation(net, mel, np.arange(12), n_frames)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)

    def loss_of(x, t):
        return -net(x).gather(1, t[:, None]).mean()

    losses = []
    for step in range(12):
        x, t = patchcnn.train_batch(mel, np.arange(12), labels, n_frames, np.random.default_rng(step), 3)
        loss = loss_of(x, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    net.eval()
    with torch.inference_mode():
        pred = patchcnn.clip_log_probs(net, mel, n_frames).argmax(1).numpy()
    assert (pred == labels).mean() > 0.5


def test_patchcnn_through_the_training_loop_beats_chance_and_deploys(tmp_path, monkeypatch):
    """`patchcnn` on a synthetic cache via run_all: the r80 run beats chance clearly, then the `all` run."""
    import run_all
    from features import synth

    monkeypatch.setitem(patchcnn.PRESETS, "tiny", {"max_epochs": 8, "batch_size": 8})
    data = synth.write_dataset(tmp_path / "synthetic", n_per_class=5, duration=4.0)
    args = ["--data", str(data), "--cache", str(tmp_path / "cache"), "--runs", str(tmp_path / "runs"),
            "--models", "patchcnn", "--preset", "tiny", "--threads", "2"]
    assert run_all.main(args) == 0
    runs = tmp_path / "runs" / "synthetic" / "patchcnn"
    config = json.loads((runs / "r80-tiny-seed0" / "config.json").read_text())
    assert config["test"]["top1"] >= 0.4  # chance is 0.1
    assert (runs / "all-tiny-seed0" / "COMPLETE").exists() and not (runs / "all-tiny-seed0" / "predictions.npz").exists()
    state = torch.load(runs / "all-tiny-seed0" / "model.pt", weights_only=True)
    assert float(state["band_std"].min()) > 0 and float(state["band_mean"].abs().sum()) > 0
