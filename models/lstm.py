"""Report model 4: a 2-layer LSTM reading the 400x400x3 mel-spectrogram image column by column.

Each of the 400 time steps is one image column (one frame): its 400 pixels x 3 colour channels = 1200
values. ``LSTM(1200, 400, num_layers=2)`` and ``Linear(400, 10)`` on the last step's output:
3,850,410 parameters. Training (report): Adam lr 1e-3, batch 64, at most 120 epochs, stop after the
first epoch whose running training accuracy exceeds 87 %. The report ran it on r70 (52 % top-1) and
r80 (62 % top-1, 78 % top-2, 85 % top-3); r80 is the default here.

Choices the report leaves open: pixels scaled to [0, 1] (/255); a step's 1200 values ordered pixel by
pixel (top to bottom), RGB within a pixel; no dropout between the layers; cross-entropy on the logits;
zero initial states; torch's default initialisation.
"""

import numpy as np
import torch
from torch import nn

from .hparams import Hparams

HPARAMS = Hparams(view="img400", batch_size=64, lr=1e-3, optimizer="adam", max_epochs=120, stop_acc=0.87,
                  split="r80", loss="cross_entropy")

# quick: at most 6 epochs (~41 s per 800-clip epoch on 2 cores: <= 4.2 min).
PRESETS = {"quick": {"max_epochs": 6}, "tiny": {"max_epochs": 2, "batch_size": 8}}


class ColumnLSTM(nn.Module):
    """(B, 400, 1200) columns -> (B, n_classes) logits from the last step of a 2-layer LSTM."""

    def __init__(self, n_in: int = 1200, hidden: int = 400, layers: int = 2, n_classes: int = 10):
        super().__init__()
        self.lstm = nn.LSTM(n_in, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def build(n_classes: int = 10) -> tuple:
    """The network and its input transform.

    Parameters
    ----------
    n_classes : int
        Outputs of the head (the report: 10 genres).

    Returns
    -------
    net : nn.Module
        (B, 400, 1200) float32 -> (B, n_classes) logits.
    transform : callable
        (B, 400, 400, 3) uint8 images (numpy, or a tensor on any device) -> (B, 400, 1200) float32
        tensor in [0, 1] on the same device, one row per image column.
    """
    return ColumnLSTM(n_classes=n_classes), transform


def transform(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(B, H=400, W=400, 3) uint8 -> (B, W=400 steps, H*3=1200) float32 in [0, 1]."""
    x = torch.as_tensor(x).permute(0, 2, 1, 3).reshape(len(x), x.shape[2], -1)
    return x.float().div_(255)
