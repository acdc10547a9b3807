"""Report model 3: a 2-D CNN on the 400x400x3 mel-spectrogram image.

The report's layers (no padding, ReLU after every convolution and after the first Linear)::

    Conv2d(3, 16, 3) -> Conv2d(16, 16, 3) -> MaxPool2d(2) -> Dropout(0.25)    16 x 198 x 198
    Conv2d(16, 16, 3) -> MaxPool2d(2) -> Dropout(0.25)                        16 x 98 x 98
    Conv2d(16, 16, 3) -> MaxPool2d(2) -> Dropout(0.25)                        16 x 48 x 48 = 36864
    Linear(36864, 120) -> Dropout(0.5) -> Linear(120, 10); cross-entropy on the logits

4,432,418 parameters, as the report's appendix counts. Training (report): SGD lr 1e-3, batch 20,
100 epochs (no early stop); split r80 (80/20, no validation). Report: 41 % top-1, 59 % top-2, 74 % top-3.

Choices the report leaves open: pixels scaled to [0, 1] (/255), no normalisation; SGD without momentum
or weight decay (none is given); ReLU before pooling; torch's default initialisation. The network runs
in channels_last layout, which changes speed only: the cached HWC images are already that layout.
"""

import numpy as np
import torch
from torch import nn

from .hparams import Hparams

HPARAMS = Hparams(view="img400", batch_size=20, lr=1e-3, optimizer="sgd", max_epochs=100, stop_acc=None,
                  split="r80", loss="cross_entropy", channels_last=True)

# quick: 5 epochs (~49 s per 800-clip epoch on 2 cores: ~4 min).
PRESETS = {"quick": {"max_epochs": 5}, "tiny": {"max_epochs": 2, "batch_size": 8}}


def build(n_classes: int = 10) -> tuple:
    """The network and its input transform.

    Parameters
    ----------
    n_classes : int
        Outputs of the last layer (the report: 10 genres).

    Returns
    -------
    net : nn.Module
        (B, 3, 400, 400) float32 -> (B, n_classes) logits.
    transform : callable
        (B, 400, 400, 3) uint8 images (numpy, or a tensor on any device) -> (B, 3, 400, 400) float32
        tensor in [0, 1] on the same device, stored channels_last (a permuted view of the HWC batch, no
        reordering copy).
    """
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25),
        nn.Conv2d(16, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25),
        nn.Conv2d(16, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25),
        nn.Flatten(), nn.Linear(36864, 120), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(120, n_classes),
    )
    return net, transform


def transform(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(B, 400, 400, 3) uint8 -> (B, 3, 400, 400) float32 in [0, 1], channels_last strides."""
    return torch.as_tensor(x).permute(0, 3, 1, 2).float().div_(255)
