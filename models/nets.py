"""The torch networks' family (``NETS``): trained by the epoch loop (``models/loop.py``), stored as a
state dict (``model.pt``, read back with ``torch.load(weights_only=True)``, which runs no code).

Its models are the files whose ``HPARAMS`` is a ``models.hparams.Hparams``: the report's four networks
and ``patchcnn``. A network scores one window as it was trained (its view of the window, cropped as in
training), or, when its model file has ``clip_log_probs`` (``loop.Hooks``), the valid frames of the
window's dB mel, weighted by their count.
"""

import warnings

import numpy as np

from .family import Fitted, ModelError, resolve_device, whole_window
from .runs import repair_command


class NetFamily:
    """The ``models.family.Family`` of the torch networks."""

    key = "log_probs"

    def files(self, hp) -> tuple:
        return ("model.pt", "history.csv")  # history_final.csv too when the split retrains on train+val

    def inputs(self, hp) -> tuple:
        return (hp.view, "lengths") if hp.view == "mel_db" else (hp.view,)

    def embedder(self, hp, device="cpu", network=None):
        return None

    def fit(self, module, hp, job) -> Fitted:
        from . import loop

        log_probs, results = loop.fit(module, hp, job)
        return Fitted(log_probs, results)

    def scorer(self, module, run, embedder, device="cpu"):
        from .loop import Hooks

        device = resolve_device(device)
        net, transform = _load_net(module, run, device)
        hp = run.config["hparams"]
        clip_log_probs = Hooks.of(module).clip_log_probs
        if clip_log_probs is not None:
            return _ClipScorer(net, clip_log_probs)
        return _WindowScorer(net, transform, hp.get("view"), hp.get("crop"), hp.get("loss", "nll"), device)


NETS = NetFamily()


def _load_net(module, run, device) -> tuple:
    """(network in eval mode on ``device``, its transform) from the run's ``model.pt``; ModelError when
    unusable."""
    import torch

    path, n_classes = run.path / "model.pt", len(run.config["classes"])
    hint = f"retrain: `{repair_command(run.path, run.config)}`"
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles in several lines; one line says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  any failure means a damaged or foreign file; no code ran
        raise ModelError(f"{path}: not a readable state dict ({type(err).__name__}); {hint}") from None
    net, transform = module.build(n_classes)
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"{path}: not the weights of models.{run.config['model']} with {n_classes} classes "
                         f"({first.rstrip(':.')}); {hint}") from None
    net.eval()
    return net.to(device), transform


class _WindowScorer:
    """One window's view, as in training: its log-probabilities, weight 1."""

    per_block, embedder = False, None
    segments = whole_window

    def __init__(self, net, transform, view, crop, loss, device):
        self.net, self.transform, self.view, self.crop, self.loss = net, transform, view, crop, loss
        self.device = device

    def prepare(self, clip) -> None:
        if self.view != "wave":
            clip.mel_db  # the costly part of every image view; the view itself is made when scored

    def __call__(self, clip) -> tuple:
        import torch

        x = clip.view(self.view)[None]
        with torch.inference_mode():
            out = self.net(self.transform(x if self.crop is None else x[:, :self.crop]).to(self.device))
            log_probs = out if self.loss == "nll" else torch.log_softmax(out, dim=1)
        return log_probs[0].double().cpu().numpy(), 1.0


class _ClipScorer:
    """The model's own clip prediction over the window's valid dB-mel frames, weighted by their count."""

    per_block, embedder = True, None
    segments = whole_window

    def __init__(self, net, clip_log_probs):
        self.net, self.clip_log_probs = net, clip_log_probs

    def prepare(self, clip) -> None:
        clip.mel_db

    def __call__(self, clip) -> tuple:
        import torch

        n_valid = clip.n_frames
        with torch.inference_mode():
            out = self.clip_log_probs(self.net, clip.mel_db[None], np.array([n_valid], np.int64))
        return out[0].double().cpu().numpy(), float(n_valid)
