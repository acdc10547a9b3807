"""Writes tests/data/musicnn_reference.{npz,json}: TensorFlow's own MSD_musicnn, run on a few patches.

Usage (TensorFlow and librosa live in a throwaway venv, never in the project's)::

    python3 -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu==2.15.1 numpy==1.26.4 \\
        librosa==0.10.2.post1 resampy==0.4.3
    /tmp/tf/bin/python tests/make_musicnn_reference.py --wheel musicnn-0.1.0-py3-none-any.whl

tests/test_musicnn.py checks models/musicnn.py and models/tfbundle.py against these files; it never
imports this script. The wheel is unzipped into a temporary folder and TensorFlow builds the graph from
its own ``musicnn/models.py`` (``define_model(x, is_training, 'MSD_musicnn', 50)`` as musicnn's
extractor does, fed ``is_training=False``), restoring the checkpoint by its explicit prefix (the
``checkpoint`` file names its author's paths). The placeholder is ``[None, None, 96]`` so that one
graph runs both lengths; the graph's operations are those of the extractor's ``[None, 187, 96]``.

The npz holds, for the inputs ``x187`` (6 patches of 187 frames x 96 bands) and ``x50`` (1 patch of
50 frames): the inputs (float32) and TensorFlow's ``<output>_<length>`` for ``taggram`` (sigmoid),
``logits``, ``max_pool``, ``mean_pool`` (B, 753) and ``penultimate`` (B, 200), float32. Patches 0-2
are uniform in [0, 4) (the range of log10(10000 mel + 1)); 3-5 are real: patch 3 (frames 561-747,
about 9-12 s) of three ../shared/data/gtzan_sample clips through musicnn's pipeline
(``librosa.load(sr=16000)`` with librosa 0.7's resampler, kaiser_best; ``melspectrogram`` n_fft 512,
hop 256, 96 bands with librosa 0.7's reflect padding; rounded to float16; ``log10(10000 x + 1)``,
which numpy's promotion computes in float32).
The json holds, from ``tf.compat.v1.train.NewCheckpointReader``, every tensor's shape, dtype and the
sha256 of its little-endian bytes, and the sha256 of the ``.index`` + ``.data`` bytes together.
"""
import argparse
import hashlib
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "data" / "musicnn_reference"
SAMPLE = HERE.parent.parent / "shared" / "data" / "gtzan_sample"
CLIPS = ("classical/classical.00000.wav", "metal/metal.00000.wav", "hiphop/hiphop.00000.wav")
PATCH, FIRST_FRAME, N_RANDOM, SEED = 187, 3 * 187, 3, 20240611
OUTPUTS = ("taggram", "logits", "max_pool", "mean_pool", "penultimate")


def real_patch(path):
    """Frames 561-747 of a clip, as musicnn's ``extractor.batch_data`` computes them: (187, 96) float32."""
    import librosa

    audio, sr = librosa.load(path, sr=16000, res_type="kaiser_best")
    mel = librosa.feature.melspectrogram(y=audio, sr=sr, hop_length=256, n_fft=512, n_mels=96,
                                         pad_mode="reflect").T
    return np.log10(10000 * mel.astype(np.float16) + 1)[FIRST_FRAME:FIRST_FRAME + PATCH]


def inputs():
    """{"x187": (6, 187, 96), "x50": (1, 50, 96)} float32 patches."""
    rng = np.random.default_rng(SEED)
    random = rng.uniform(0, 4, (N_RANDOM, PATCH, 96)).astype(np.float32)
    real = np.stack([real_patch(SAMPLE / clip) for clip in CLIPS])
    return {"x187": np.concatenate([random, real]), "x50": rng.uniform(0, 4, (1, 50, 96)).astype(np.float32)}


def run_tf(package, prefix, batches):
    """TensorFlow's outputs {"<output>_<length>": array} for each batch of ``batches``."""
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    sys.path.insert(0, str(package))
    from musicnn import models

    x = tf.compat.v1.placeholder(tf.float32, [None, None, 96])
    is_training = tf.compat.v1.placeholder(tf.bool)
    logits, *_, mean_pool, max_pool, penultimate = models.define_model(x, is_training, "MSD_musicnn", 50)
    fetch = dict(zip(OUTPUTS, (tf.nn.sigmoid(logits), logits, max_pool, mean_pool, penultimate)))
    with tf.compat.v1.Session() as sess:
        tf.compat.v1.train.Saver().restore(sess, prefix)
        out = {}
        for name, batch in batches.items():
            values = sess.run(fetch, {x: batch, is_training: False})
            out.update({f"{key}_{name[1:]}": value.astype(np.float32) for key, value in values.items()})
    return out


def tensor_table(prefix):
    """{name: {"shape", "dtype", "sha256"}} for every tensor, as TensorFlow's own reader returns it."""
    import tensorflow as tf

    reader = tf.compat.v1.train.NewCheckpointReader(prefix)
    table = {}
    for name in sorted(reader.get_variable_to_shape_map()):
        value = np.asarray(reader.get_tensor(name))
        little = value.astype(value.dtype.newbyteorder("<"))
        table[name] = {"shape": list(value.shape), "dtype": str(value.dtype),
                       "sha256": hashlib.sha256(little.tobytes()).hexdigest()}
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", required=True, type=Path, help="musicnn-0.1.0-py3-none-any.whl")
    args = parser.parse_args()
    import librosa
    import tensorflow as tf

    batches = inputs()
    with tempfile.TemporaryDirectory() as tmp:
        zipfile.ZipFile(args.wheel).extractall(tmp)
        prefix = f"{tmp}/musicnn/MSD_musicnn/"
        arrays = {**batches, **run_tf(tmp, prefix, batches)}
        files = hashlib.sha256()
        for suffix in (".index", ".data-00000-of-00001"):
            files.update(Path(prefix + suffix).read_bytes())
        meta = {"wheel": args.wheel.name, "files_sha256": files.hexdigest(), "tensors": tensor_table(prefix),
                "real_patches": {f"x187[{N_RANDOM + i}]": f"{clip} frames {FIRST_FRAME}-{FIRST_FRAME + PATCH - 1}"
                                 for i, clip in enumerate(CLIPS)},
                "versions": {"tensorflow": tf.__version__, "numpy": np.__version__,
                             "librosa": librosa.__version__}}
    np.savez_compressed(OUT.with_suffix(".npz"), **arrays)
    OUT.with_suffix(".json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}.npz and .json: {len(meta['tensors'])} tensors, outputs {sorted(arrays)}")


if __name__ == "__main__":
    main()
