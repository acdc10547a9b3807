"""Writes tests/data/value_reference.npz: our own feature values, tagged with the code versions.

Usage: .venv/bin/python tests/make_value_reference.py   (after bumping a VERSION on purpose)

tests/test_values.py recomputes every value and fails when one changed while its VERSION
(``features.audio``, ``features.mel``, ``features.images``, ``features.cache``) did not: the cache
fingerprints hold those versions, so an unbumped change would leave users' caches silently stale.
"""
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features import audio, cache, clips, images, mel, synth  # noqa: E402

OUT = Path(__file__).resolve().parent / "data" / "value_reference.npz"


def signals(folder: Path) -> dict:
    """{name: path} of the reference inputs: a 3-s synthetic clip (16-bit, 22050 Hz) and a 44.1 kHz
    float stereo file (resampled and downmixed on decoding)."""
    y = synth.generate(6, 0, duration=3.0)
    sf.write(folder / "pcm16.wav", y, 22050, subtype="PCM_16")
    sf.write(folder / "stereo44k.wav", np.stack([y[::2], -0.5 * y[1::2]], 1).repeat(4, 0)[:3 * 44100],
             44100, subtype="FLOAT")
    return {"pcm16": folder / "pcm16.wav", "stereo44k": folder / "stereo44k.wav"}


def values(paths: dict) -> dict:
    """Every value a cache row holds, for the reference inputs."""
    out = {}
    for name, path in paths.items():
        y = audio.load(path, duration=None)
        win = clips.window(y, audio.N_SAMPLES, 22050)
        out[f"{name}/load"] = y
        out[f"{name}/mel"] = mel.mel_db(win)
    S = out["pcm16/mel"]
    out["pcm16/pcm"] = clips.window(audio.load_pcm16(paths["pcm16"], None), audio.N_SAMPLES, 22050)
    for view, img in images.image_views(S, tuple(images.VIEWS)).items():
        out[f"pcm16/img{view}"] = img
    return out


def versions() -> dict:
    return {"audio": audio.VERSION, "mel": mel.VERSION, "images": images.VERSION, "cache": cache.VERSION}


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        v = values(signals(Path(tmp)))
    np.savez_compressed(OUT, **v, **{f"version/{k}": n for k, n in versions().items()})
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes) at versions {versions()}")
