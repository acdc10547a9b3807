"""Seeded mutation fuzzing: damaged WAV, FLAC, AU and Ogg Vorbis files through the loader and predict.py.

Valid files (0.5-2 s, several rates and channel counts) are made here; each case flips, inserts,
deletes or overwrites bytes, or truncates, in the first 64 bytes (the header) or in the body. Every
outcome must be audio (finite float32) or an ``AudioError`` of one line; anything else, or a case
that runs past its deadline (a decoder spinning on a damaged header), fails the test with the case
named, so a failure reproduces from its seed and index alone.
"""

import collections
import json
import re
import warnings

import numpy as np
import pytest
import soundfile as sf

import predict
from features import audio
from features.audio import AudioError
from helpers import deadline

SEED = 20240601
N_CASES = 300
N_PREDICT = 30  # of those, fed through predict.main too (each one decodes, draws a mel and scores it)
HEADER = 64  # bytes counted as the header: every format here keeps its rate, channels and length there
FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "au": ("AU", "PCM_16"), "ogg": ("OGG", "VORBIS")}
# 4-byte values that header fields (sizes, frame counts, rates) handle worst
EXTREMES = [b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x80", b"\x00\x00\x00\x00", b"\x01\x00\x00\x00"]


def originals(tmp_path, rng) -> dict:
    """``{ext: bytes}``: one valid file per format, of a random length, rate and channel count."""
    out = {}
    for ext, (fmt, subtype) in FORMATS.items():
        sr, channels = int(rng.choice([16000, 22050, 44100])), int(rng.integers(1, 3))
        t = np.arange(int(rng.uniform(0.5, 2.0) * sr)) / sr
        y = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) + 0.05 * rng.standard_normal(len(t))
        path = tmp_path / f"valid.{ext}"
        sf.write(path, np.repeat(y[:, None], channels, axis=1), sr, format=fmt, subtype=subtype)
        out[ext] = path.read_bytes()
    return out


def mutate(data: bytes, rng) -> tuple:
    """(damaged copy of ``data``, what was done): one seeded mutation in the header or the body."""
    b = bytearray(data)
    region = str(rng.choice(["header", "body"]))
    lo, hi = (0, HEADER) if region == "header" else (HEADER, len(b))
    at, k = int(rng.integers(lo, hi)), int(rng.integers(1, 17))
    op = str(rng.choice(["flip", "insert", "delete", "extreme", "truncate"]))
    if op == "flip":
        for i in rng.integers(lo, hi, size=min(k, 8)):
            b[i] ^= int(rng.integers(1, 256))
    elif op == "insert":
        b[at:at] = rng.bytes(k)
    elif op == "delete":
        del b[at:at + k]
    elif op == "extreme":
        b[at & ~3:(at & ~3) + 4] = EXTREMES[int(rng.integers(len(EXTREMES)))]
    else:
        del b[at:]
    return bytes(b), f"{op} at {at} ({region})"


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> list:
    """``N_CASES`` damaged files ``[(path, description)]``, the formats in turn."""
    tmp = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(SEED)
    valid = originals(tmp, rng)
    out = []
    for i in range(N_CASES):
        ext = list(FORMATS)[i % len(FORMATS)]
        data, what = mutate(valid[ext], rng)
        path = tmp / f"case{i:03d}.{ext}"
        path.write_bytes(data)
        out.append((path, f"seed {SEED} case {i} ({ext}, {what})"))
    return out


def check_audio(y, what):
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.ndim == 1, what
    assert np.isfinite(y).all(), what


def outcome(path, what) -> str:
    """Decode ``path`` with ``load`` (whole and 30 s) and ``stream``; 'audio' or the kind of AudioError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", audio.AudioWarning)
            with deadline(10, what):
                check_audio(audio.load(path, duration=None), what)
                check_audio(audio.load(path), what)
                for chunk in audio.stream(path):
                    check_audio(chunk, what)
        return "audio"
    except AudioError as err:
        assert "\n" not in str(err) and str(err).startswith(f"{path}: "), f"{what}: {err!r}"
        return re.sub(r"\d+", "N", str(err.problem).split(" (")[0].split(":")[0])


def test_damaged_files_decode_or_fail_in_one_line(cases):
    counts = collections.Counter(outcome(path, what) for path, what in cases)
    print(f"\n{len(cases)} cases:", dict(counts.most_common()))
    assert counts["audio"] and sum(counts.values()) - counts["audio"] > len(cases) // 4  # the mutations bite


@pytest.fixture(scope="module")
def svm_run(trained):
    """The shared tiny SVM run (conftest's ``trained``)."""
    return next(trained[1].glob("synthetic/svm/*"))


def test_damaged_files_through_predict(cases, svm_run, capsys):
    chosen = cases[::len(cases) // N_PREDICT]
    with deadline(120, "predict.main over the damaged files"):
        code = predict.main(["--run", str(svm_run), "--jsonl", "--"] + [str(p) for p, _ in chosen])
    out, err = capsys.readouterr()
    assert code in (0, 1) and "Traceback" not in err
    classified = collections.Counter(json.loads(line)["file"] for line in out.splitlines())
    errors = collections.Counter(line.split(": ")[1] for line in err.splitlines()
                                 if not line.startswith(("predict: warning:", "predict: note:")))
    for path, what in chosen:
        assert classified[str(path)] + errors[str(path)] == 1, f"{what}: {classified[str(path)]} results, " \
                                                             f"{errors[str(path)]} error lines"
    assert code == (1 if errors else 0)
    print(f"\npredict.main: {len(classified)} classified, {sum(errors.values())} refused")
