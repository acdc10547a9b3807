"""MSD_musicnn (Pons & Serra 2019), the pretrained music tagger, in torch for inference.

The network is musicnn's ``build_musicnn(num_filt_midend=64, num_units_backend=200)`` trained on the
Million Song Dataset's 50 tags; its weights are read from the ``musicnn`` package's TensorFlow
checkpoint (``models/tfbundle.py``; the package is installed without its TensorFlow dependency and
only its data files are used). Outputs equal TensorFlow's within 1e-4 + 1e-5 x |value|
(tests/test_musicnn.py: max_pool, up to 80, differs by 2.4e-4, within TensorFlow's own float32
rounding; the rest by at most 2e-5). Input: log10(10000 mel + 1) of 16-kHz audio, 512-sample FFT,
hop 256, 96 Slaney mel bands, time first::

    x (B, T, 96) -> BatchNorm (one channel)                                  B x 1 x T x 96
    front-end, each conv -> ReLU -> BatchNorm -> max over frequency, concatenated:
        timbral  2 x Conv2d(1, 204, (7, 38) / (7, 67))   time padded 3 + 3     204 + 204
        temporal 3 x Conv2d(1, 51, (128 / 64 / 32, 1))   time padded as TF's 'same'    3 x 51   -> 561 x T
    mid-end: 3 x [Conv1d(k 7, pad 3) -> ReLU -> BatchNorm], 561 -> 64 -> 64 -> 64, the last two
        residual; the front-end and the three outputs concatenated          753 x T
    back-end: max and mean over time (753 each), interleaved (max0, mean0, max1, ...) -> BatchNorm
        -> Linear(1506, 200) -> ReLU -> BatchNorm ("penultimate") -> Linear(200, 50) ("logits")

Details that matter to match TensorFlow: batch-norm epsilon 1e-3 (torch's 1e-5 moves tag
probabilities by up to 0.15 on the reference patches); TF 'same' puts the odd padding frame of the even temporal kernels at the end (63 / 64, 31 / 32,
15 / 16); the zero padding comes after the input batch norm; ReLU precedes batch norm everywhere.
Any length T >= 1 works; the network was trained on T = 187 (3 s).

Speed (bench/bench_musicnn.py, 2 cores): a 30-s clip (10 patches) embeds in 0.13 s on 2 threads,
0.24 s on 1, 2 patches per pass (``EMBED_BATCH``; 10 at once is 35 % slower on 2 threads). The
front-end's convolutions are 3/4 of it, near the cores' float32 peak; what helped was running them
channels_last and applying ReLU and batch norm after the max over frequency (`FrontBlock`), 0.32 s ->
0.24 s on 1 thread. Folding the remaining batch norms into the layers after them would save well
under 1 % (they act on (B, C, T) maps or vectors), so they stay as TensorFlow has them.
"""

import copy
import functools
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from features import backbone

from . import tfbundle

SR = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
PATCH_FRAMES = 187  # 3 s: librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1
N_FEATURES = 1506  # 753 max-pooled + 753 mean-pooled
# musicnn's configuration.MSD_LABELS, in the order of the outputs
MSD_TAGS = ("rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
            "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock",
            "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill", "instrumental",
            "punk", "oldies", "blues", "hard rock", "ambient", "acoustic", "experimental",
            "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country", "easy listening", "sexy",
            "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop",
            "sad", "House", "happy")
BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization's default
# Measured by bench/bench_musicnn.py on 2 cores: patches per forward pass in `embed`, by precision
# (bfloat16 kernels gain from larger batches: 10 patches 2.2x faster than float32, 2 patches 1.5x).
EMBED_BATCH = 2
EMBED_BATCH_BF16 = 10
# On a GPU a forward pass of a few patches leaves it idle: the engine groups several files' patches
# (features.clips.embed_together) up to this many per pass. 256 patches (25 30-s clips) hold the
# front end's widest activation, (256, 204, 187, 59) float32 = 2.3 GB; not yet tuned on a GPU.
EMBED_BATCH_CUDA = 256
PRECISIONS = ("float32", "bfloat16")
# Version of the values the network returns: bump it with any change that alters them (never for a
# speed-only rewrite). An embedding's cache fingerprint includes it, with the weights' sha256.
VERSION = 1
# What `embedder` gives the feature cache per patch, in this order (models/best.py)
EMBEDDING = ("max_pool", "mean_pool", "penultimate")
N_EMBEDDING = 753 + 753 + 200


REINSTALL = ".venv/bin/pip install --force-reinstall --no-deps --require-hashes -r requirements-weights.txt"


class BackboneMissing(RuntimeError):
    """The musicnn package, which carries the pretrained weights, is not installed."""

    def __init__(self):
        super().__init__("the pretrained musicnn weights are not installed: run `make setup` "
                         "(or `.venv/bin/pip install --no-deps musicnn==0.1.0`)")


class FrontBlock(nn.Module):
    """Conv2d over (time, frequency) -> ReLU -> BatchNorm -> max over frequency: (B, 1, T, 96) -> (B, C, T).

    Time is padded as TF's 'same' (``(k - 1) // 2`` frames before, ``k // 2`` after), frequency not.
    """

    def __init__(self, channels: int, kernel: tuple):
        super().__init__()
        self.pad = (0, 0, (kernel[0] - 1) // 2, kernel[0] // 2)
        # channels_last: oneDNN's conv is 20-30 % faster, and the max over frequency then runs along
        # contiguous channels
        self.conv = nn.Conv2d(1, channels, kernel).to(memory_format=torch.channels_last)
        self.bn = nn.BatchNorm1d(channels, eps=BN_EPS)

    @staticmethod
    def kernel_from_tf(kernel: np.ndarray) -> np.ndarray:
        """TF's (H, W, I, O) kernel as torch's (O, I, H, W)."""
        return kernel.transpose(3, 2, 0, 1)

    def forward(self, x):
        # ReLU and batch norm after the max, on 96x fewer values: both are monotone per channel, so
        # they commute with it, exactly, except that a negative batch-norm scale turns the max into a
        # min, taken as minus the max of the negated conv (negating weights and bias is exact).
        sign = torch.where(self.bn.weight < 0, -1.0, 1.0)
        y = F.conv2d(F.pad(x, self.pad), self.conv.weight * sign[:, None, None, None], self.conv.bias * sign)
        pooled = F.max_pool2d(y, (1, y.shape[3]))[..., 0] * sign[:, None]
        return self.bn(F.relu(pooled))


class MidBlock(nn.Module):
    """Conv1d over time (kernel 7, zero padded 3 + 3) -> ReLU -> BatchNorm: (B, C_in, T) -> (B, C, T)."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, channels, 7, padding=3)
        self.bn = nn.BatchNorm1d(channels, eps=BN_EPS)

    @staticmethod
    def kernel_from_tf(kernel: np.ndarray) -> np.ndarray:
        """TF's (7, C_in, 1, C) kernel, whose 2-D 'width' is the channel axis, as torch's (C, C_in, 7)."""
        return kernel[:, :, 0].transpose(2, 1, 0)

    def forward(self, x):
        return self.bn(F.relu(self.conv(x)))


class Musicnn(nn.Module):
    """MSD_musicnn; the layers in the order TensorFlow created (and named) them."""

    def __init__(self):
        super().__init__()
        self.input_bn = nn.BatchNorm2d(1, eps=BN_EPS)
        self.frontend = nn.ModuleList([FrontBlock(204, (7, 38)), FrontBlock(204, (7, 67)),  # timbral
                                       *(FrontBlock(51, (k, 1)) for k in (128, 64, 32))])  # temporal
        self.midend = nn.ModuleList([MidBlock(561, 64), MidBlock(64, 64), MidBlock(64, 64)])
        self.pool_bn = nn.BatchNorm1d(2 * 753, eps=BN_EPS)
        self.dense = nn.Linear(2 * 753, 200)
        self.dense_bn = nn.BatchNorm1d(200, eps=BN_EPS)
        self.out = nn.Linear(200, len(MSD_TAGS))

    def forward(self, x):
        """Tags and pooled features of log-mel patches.

        Parameters
        ----------
        x : torch.Tensor, shape (B, T, 96), float32
            log10(10000 mel + 1), time first (T = PATCH_FRAMES = 187 as trained; any T >= 1 runs).

        Returns
        -------
        dict of torch.Tensor
            "logits" (B, 50) and "taggram" (B, 50) their sigmoid, tags in MSD_TAGS order;
            "max_pool", "mean_pool" (B, 753): the mid-end features' max / mean over time;
            "penultimate" (B, 200): the dense layer after ReLU and batch norm;
            "features" (B, 1506): ``[max_pool, mean_pool]`` concatenated (max_pool first, not
            interleaved as the back-end's input is).
        """
        h = self.input_bn(x.unsqueeze(1))
        h = torch.cat([block(h) for block in self.frontend], dim=1)
        layers = [h, self.midend[0](h)]
        for block in self.midend[1:]:
            layers.append(block(layers[-1]) + layers[-1])
        h = torch.cat(layers, dim=1)
        max_pool, mean_pool = h.amax(dim=2), h.mean(dim=2)
        interleaved = torch.stack([max_pool, mean_pool], dim=2).flatten(1)
        penultimate = self.dense_bn(F.relu(self.dense(self.pool_bn(interleaved))))
        logits = self.out(penultimate)
        return {"logits": logits, "taggram": torch.sigmoid(logits), "max_pool": max_pool,
                "mean_pool": mean_pool, "penultimate": penultimate,
                "features": torch.cat([max_pool, mean_pool], dim=1)}


def weights_prefix() -> Path:
    """The installed musicnn package's ``MSD_musicnn`` folder (holding ``.index`` and ``.data-*``).

    Found without importing the package's TensorFlow code. Raises `BackboneMissing` when absent.
    """
    spec = importlib.util.find_spec("musicnn")
    folders = [Path(p) / "MSD_musicnn" for p in (spec.submodule_search_locations or [])] if spec else []
    for folder in folders:
        if (folder / ".index").is_file():
            return folder
    raise BackboneMissing()


def weights_sha256(prefix=None) -> str:
    """sha256 (hex) of the checkpoint's ``.index`` then ``.data-00000-of-00001`` bytes (cache fingerprints).

    ``prefix`` as for `load`; a missing file is a `tfbundle.BundleError` naming it.
    """
    prefix = weights_prefix() if prefix is None else prefix
    digest = hashlib.sha256()
    for suffix in (".index", ".data-00000-of-00001"):
        path = tfbundle.bundle_file(prefix, suffix)
        try:
            digest.update(path.read_bytes())
        except OSError as e:
            raise tfbundle.BundleError(f"{path}: {e.strerror}") from None
    return digest.hexdigest()


def _tf_name(layer: str, i: int) -> str:
    """TensorFlow's name of the i-th layer of a kind: ``conv2d``, ``conv2d_1``, ..."""
    return f"{layer}_{i}" if i else layer


def _sources(net: Musicnn) -> list:
    """(parameter or buffer, checkpoint tensor name, TF -> torch layout) for every weight of ``net``."""
    same = np.asarray
    blocks = [*net.frontend, *net.midend]
    sources = []
    for i, bn in enumerate([net.input_bn, *(b.bn for b in blocks), net.pool_bn, net.dense_bn]):
        name = _tf_name("batch_normalization", i)
        sources += [(bn.weight, f"{name}/gamma", same), (bn.bias, f"{name}/beta", same),
                    (bn.running_mean, f"{name}/moving_mean", same),
                    (bn.running_var, f"{name}/moving_variance", same)]
    for i, block in enumerate(blocks):
        name = _tf_name("conv2d", i)
        sources += [(block.conv.weight, f"{name}/kernel", block.kernel_from_tf),
                    (block.conv.bias, f"{name}/bias", same)]
    for i, dense in enumerate([net.dense, net.out]):
        name = _tf_name("dense", i)
        sources += [(dense.weight, f"{name}/kernel", np.transpose), (dense.bias, f"{name}/bias", same)]
    return sources


@functools.lru_cache(maxsize=None)
def _load(prefix: Path) -> Musicnn:
    tensors = tfbundle.read_bundle(prefix)
    index = tfbundle.bundle_file(prefix, ".index")
    net = Musicnn()
    for param, name, layout in _sources(net):
        if name not in tensors:
            raise tfbundle.BundleError(f"{index}: no tensor {name!r}: not an MSD_musicnn checkpoint")
        value = torch.from_numpy(np.ascontiguousarray(layout(tensors[name])))
        if value.shape != param.shape:
            raise tfbundle.BundleError(f"{index}: tensor {name!r} has shape {tuple(value.shape)}, "
                                       f"MSD_musicnn's is {tuple(param.shape)}")
        param.data.copy_(value)
    return net.eval().requires_grad_(False)


def load(prefix=None) -> Musicnn:
    """MSD_musicnn with the checkpoint's weights, in eval mode, float32, gradients off.

    Parameters
    ----------
    prefix : str or Path, optional
        The checkpoint: its folder, or TensorFlow's file prefix (see `tfbundle.read_index`);
        default `weights_prefix()`.

    Returns
    -------
    Musicnn
        Cached per process and folder: shared by every caller, so do not modify it.

    Raises
    ------
    BackboneMissing
        No prefix given and the musicnn package is not installed.
    tfbundle.BundleError
        A missing, damaged or foreign checkpoint (one line naming the file).
    """
    return _load(Path(weights_prefix() if prefix is None else prefix).resolve())


def embed(net: Musicnn, patches, batch_size: int = EMBED_BATCH, outputs=("max_pool", "mean_pool"),
          precision: str = "float32"):
    """Outputs of `Musicnn.forward` for each patch, concatenated in the order of ``outputs``.

    Parameters
    ----------
    net : Musicnn
    patches : array_like, shape (P, T, 96)
        log10(10000 mel + 1) patches, time first (T = PATCH_FRAMES as trained).
    batch_size : int
        Patches per forward pass (speed only: the values do not depend on it beyond float rounding).
        Runs where ``net`` is: on the CPU on ``torch.get_num_threads()`` threads.
    outputs : sequence of str
        Keys of `Musicnn.forward`'s dict; the default gives its "features", (P, 1506).
    precision : str
        ``"float32"``, or ``"bfloat16"``: the forward pass under torch's CPU bfloat16 autocast (1.5-2.2x
        faster where the CPU has bf16 units; features within 2 % relative, and the same pool CV
        accuracy of ``best``, every held-out genre the same: bench/RESULTS.md).

    Returns
    -------
    np.ndarray, shape (P, sum of the outputs' widths), float32
    """
    x = torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32))
    if x.ndim != 3 or x.shape[2] != N_MELS or x.shape[1] < 1:
        raise ValueError(f"musicnn.embed: patches of shape {tuple(x.shape)}, expected (P, T, {N_MELS})")
    device = next(net.parameters()).device  # the patches go where the network is
    with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=precision == "bfloat16"):
        chunks = [net(chunk.to(device)) for chunk in x.split(batch_size)]
        out = torch.cat([torch.cat([c[name] for name in outputs], dim=1) for c in chunks])
    return out.float().cpu().numpy()


def taggram(patches, device: str = "cpu") -> np.ndarray:
    """musicnn's 50 tag probabilities (independent sigmoids, MSD_TAGS order) per patch: (P, 50) float32.

    ``patches`` as for `embed`; the installed weights (`load`) on ``device``; raises `BackboneMissing`
    without them.
    """
    return embed(_on(device), patches, outputs=("taggram",))


def _on(device: str) -> Musicnn:
    """The installed network on ``device``: the shared one (`load`) on the CPU, a copy elsewhere."""
    net = load()
    return net if torch.device(device).type == "cpu" else _moved(net, device)


@functools.lru_cache(maxsize=None)
def _moved(net: Musicnn, device: str) -> Musicnn:
    return copy.deepcopy(net).to(device)


def default_precision(device: str = "cpu") -> str:
    """``bfloat16`` on a CPU with bf16 units (AVX512-BF16 or AMX), else ``float32`` (GPUs included: their
    features then equal the CPU's float32 ones within 1e-4)."""
    if torch.device(device).type != "cpu":
        return "float32"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no way to tell here; float32 is always right
        return "float32"
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


def identity(precision: str = "float32") -> str:
    """What decides the embedding besides its input: weights, code version, outputs, precision (a
    float32 embedding's identity names no precision, as before precisions existed)."""
    return (f"MSD_musicnn sha256 {weights_sha256()} version {VERSION} outputs {'+'.join(EMBEDDING)}"
            + ("" if precision == "float32" else f" precision {precision}"))


@functools.lru_cache(maxsize=None)
def embedder(device: str = "cpu", precision: str = None) -> backbone.Embedder:
    """The installed network on ``device`` at ``precision`` (default: ``default_precision``) as the feature
    cache sees it (one per process, device and precision): `EMBEDDING` per patch. Its identity names the
    precision, not the device: a GPU's features equal the CPU's within float rounding (1e-4 relative).

    Raises `BackboneMissing` when the weights are not installed, `tfbundle.BundleError` (with the
    command that reinstalls them) when they are damaged.
    """
    precision = precision or default_precision(device)
    try:
        net = _on(device)
    except tfbundle.BundleError as err:
        raise tfbundle.BundleError(f"{err}; reinstall the weights: `{REINSTALL}`") from None
    batch = (EMBED_BATCH_CUDA if torch.device(device).type == "cuda" else
             EMBED_BATCH_BF16 if precision == "bfloat16" else EMBED_BATCH)
    return backbone.Embedder(name=backbone.NAME, identity=identity(precision), n_features=N_EMBEDDING,
                             embed=functools.partial(embed, net, batch_size=batch, outputs=EMBEDDING,
                                                     precision=precision), batch=batch)


def embedder_for(network: str, device: str = "cpu") -> backbone.Embedder:
    """The embedder whose identity is ``network`` (a run's recorded one: the precision it was trained
    at), else the default one (whose identity then differs, and the run is refused by its caller)."""
    for precision in PRECISIONS:
        if identity(precision) == network:
            return embedder(device, precision)
    return embedder(device)
