"""Report model 1: a 1-D CNN on the raw waveform (first 25 s of each clip).

Input (B, 1, 551250) float32 samples in [-1, 1) at 22050 Hz. The report gives every layer::

    Conv1d(1, 8, 27, stride 2)    + MaxPool1d(4) + ReLU    -> 8 x 68903
    Conv1d(8, 16, 52)             + MaxPool1d(8) + ReLU    -> 16 x 8606
    Conv1d(16, 48, 97, stride 2)  + MaxPool1d(4) + ReLU    -> 48 x 1063
    Conv1d(48, 128, 127)                         + ReLU    -> 128 x 937 = 119936
    Linear(119936, 128) + ReLU; Linear(128, 10) + log-softmax; NLL loss

Training (report): Adam lr 1e-3, batch 50, at most 100 epochs, stop after the first epoch whose running
training accuracy exceeds 90 %; split r70 (70/10/20), and the final model is retrained on train+val
for that many epochs. Report: 51 % top-1, 65 % top-2, 79 % top-3.

Choices the report leaves open: the waveform is the cached 16-bit PCM scaled to [-1, 1) with no
normalisation; the 25 s are the clip's first 551250 samples; layer order conv -> pool -> ReLU as listed;
torch's default initialisation. The retrain on train+val starts from the same initialisation (same
seed) and runs exactly E epochs, E being the epochs of the first run (no stopping rule).
"""

import numpy as np
import torch
from torch import nn

from features.audio import RAW_SAMPLES

from .hparams import Hparams

N_SAMPLES = RAW_SAMPLES  # the first 25 s at 22050 Hz

HPARAMS = Hparams(view="wave", crop=N_SAMPLES, batch_size=50, lr=1e-3, optimizer="adam", max_epochs=100,
                  stop_acc=0.90, split="r70", final_on_trainval=True, loss="nll")

# quick: 2 epochs, then the 2-epoch retrain on train+val (~130 s per 700-clip epoch on 2 cores: ~9 min).
PRESETS = {"quick": {"max_epochs": 2}, "tiny": {"max_epochs": 2, "batch_size": 4}}


def build(n_classes: int = 10) -> tuple:
    """The network and its input transform.

    Parameters
    ----------
    n_classes : int
        Outputs of the last layer (the report: 10 genres).

    Returns
    -------
    net : nn.Module
        (B, 1, 551250) float32 -> (B, n_classes) log-probabilities.
    transform : callable
        (B, >=551250) float32 waveforms (numpy, or a tensor on any device) -> (B, 1, 551250) float32
        tensor on the same device.
    """
    net = nn.Sequential(
        nn.Conv1d(1, 8, 27, stride=2), nn.MaxPool1d(4), nn.ReLU(),
        nn.Conv1d(8, 16, 52), nn.MaxPool1d(8), nn.ReLU(),
        nn.Conv1d(16, 48, 97, stride=2), nn.MaxPool1d(4), nn.ReLU(),
        nn.Conv1d(48, 128, 127), nn.ReLU(),
        nn.Flatten(), nn.Linear(119936, 128), nn.ReLU(),
        nn.Linear(128, n_classes), nn.LogSoftmax(dim=1),
    )
    return net, transform


def transform(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(B, >=551250) float32 waveforms -> (B, 1, 551250) float32 tensor (a view when already cropped)."""
    return torch.as_tensor(x)[:, :N_SAMPLES].to(torch.float32).contiguous()[:, None, :]
