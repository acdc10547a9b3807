"""Report model 2: a 1-D CNN on the 400x400 mel-spectrogram image, read as 3 channels x 160000.

Input: the cached ``img400`` (H=400 mel rows with low frequencies at the bottom, W=400 frames, RGB
magma). The report gives layers 2-5::

    [layer 1, reconstructed below]                          -> 8 x 19998
    Conv1d(8, 16, 32, stride 2)  + AvgPool1d(4) + ReLU      -> 16 x 2496
    Conv1d(16, 64, 16)           + MaxPool1d(4) + ReLU      -> 64 x 620 = 39680
    Linear(39680, 100) + ReLU; Linear(100, 10) + log-softmax; NLL loss

Layer 1 is not in the report. Reconstruction: the image as 3 colour channels of 160000 values (its 400
rows flattened top to bottom) and ``Conv1d(3, 8, 16, stride 2) + AvgPool1d(4) + ReLU``: 160000 ->
79993 -> 19998, after which the report's layers give exactly 64 x 620 = 39680 in-features. (Kernel 16,
stride 2 and average pooling copy layer 2's pattern; other kernels near 16 would also fit.)

Training (report): Adam lr 1e-3, batch 70, at most 100 epochs, stop after the first epoch whose running
training accuracy exceeds 80 %; split r70 (70/10/20). Report: 64 % top-1, 79 % top-2, 86 % top-3.

Other choices the report leaves open: pixels scaled to [0, 1] (/255), no normalisation; torch's default
initialisation.
"""

import numpy as np
import torch
from torch import nn

from .hparams import Hparams

HPARAMS = Hparams(view="img400", batch_size=70, lr=1e-3, optimizer="adam", max_epochs=100, stop_acc=0.80,
                  split="r70", loss="nll")

# quick: at most 15 epochs (~14 s per 700-clip epoch on 2 cores: <= 3.5 min).
PRESETS = {"quick": {"max_epochs": 15}, "tiny": {"max_epochs": 2, "batch_size": 8}}


def build(n_classes: int = 10) -> tuple:
    """The network and its input transform.

    Parameters
    ----------
    n_classes : int
        Outputs of the last layer (the report: 10 genres).

    Returns
    -------
    net : nn.Module
        (B, 3, 160000) float32 -> (B, n_classes) log-probabilities.
    transform : callable
        (B, 400, 400, 3) uint8 images (numpy, or a tensor on any device) -> (B, 3, 160000) float32
        tensor in [0, 1] on the same device.
    """
    net = nn.Sequential(
        nn.Conv1d(3, 8, 16, stride=2), nn.AvgPool1d(4), nn.ReLU(),  # reconstructed layer 1
        nn.Conv1d(8, 16, 32, stride=2), nn.AvgPool1d(4), nn.ReLU(),
        nn.Conv1d(16, 64, 16), nn.MaxPool1d(4), nn.ReLU(),
        nn.Flatten(), nn.Linear(39680, 100), nn.ReLU(),
        nn.Linear(100, n_classes), nn.LogSoftmax(dim=1),
    )
    return net, transform


def transform(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(B, 400, 400, 3) uint8 -> (B, 3, 160000) float32 in [0, 1]: each colour plane, rows in order."""
    x = torch.as_tensor(x).permute(0, 3, 1, 2).reshape(len(x), 3, -1).contiguous()
    return x.float().div_(255)
