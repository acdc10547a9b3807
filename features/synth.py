"""Deterministic synthetic "genres": a stand-in dataset for when GTZAN is absent.

Ten classes, named after the GTZAN genres only so that the same pipeline runs on them
(callers label results "synthetic"). A clip is a pentatonic melody played with a
wavetable timbre, a drum pattern and background noise. Classes differ in tempo, pitch
range, note length, brightness, note decay, distortion, drum pattern and noise level, with
ranges that overlap (e.g. pop/country/disco tempi), and every clip draws its own tempo
jitter, transposition, melody, timing jitter, noise level and gain from
``(seed, label, index)``: learnable, not trivially.
"""
import io
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf

from features.files import atomic_write
from features.audio import SR
from features.dataset import GENRES


class Style(NamedTuple):
    bpm: float
    low: int  # lowest MIDI note of the melody (before transposition)
    high: int  # highest MIDI note
    note_beats: float  # note length in beats
    brightness: float  # amplitude ratio of successive partials (0 = sine, ~1 = buzzy)
    decay: float  # note decay time constant, s
    drive: float  # tanh distortion gain, 1 = clean
    kick: str  # 8 eighth-note steps per bar, 'x' = hit
    snare: str
    hat: str
    noise: float  # white-noise level relative to the melody


STYLES = {
    "blues":     Style(84, 40, 64, 1.0, 0.55, 0.50, 1.0, "x...x...", "..x...x.", "x.xx.xx.", 0.02),
    "classical": Style(72, 55, 84, 1.0, 0.25, 0.90, 1.0, "........", "........", "........", 0.005),
    "country":   Style(110, 50, 74, 0.5, 0.50, 0.15, 1.0, "x...x...", "..x...x.", "x.x.x.x.", 0.02),
    "disco":     Style(120, 48, 72, 0.5, 0.45, 0.20, 1.0, "x.x.x.x.", "..x...x.", ".x.x.x.x", 0.03),
    "hiphop":    Style(92, 36, 55, 1.0, 0.40, 0.35, 1.5, "x..x..x.", "..x...x.", "xxxxxxxx", 0.03),
    "jazz":      Style(140, 45, 80, 0.5, 0.35, 0.30, 1.0, "x.......", "......x.", "x.xxx.xx", 0.01),
    "metal":     Style(160, 40, 64, 0.25, 0.80, 0.25, 6.0, "xxxxxxxx", "..x...x.", "xxxxxxxx", 0.08),
    "pop":       Style(115, 55, 79, 0.5, 0.45, 0.25, 1.0, "x..x.x..", "..x...x.", "xxxxxxxx", 0.02),
    "reggae":    Style(76, 45, 69, 0.5, 0.50, 0.12, 1.0, "....x...", "....x...", ".x.x.x.x", 0.02),
    "rock":      Style(130, 45, 69, 0.5, 0.70, 0.30, 3.0, "x...x.x.", "..x...x.", "xxxxxxxx", 0.06),
}
_PENTATONIC = np.array([0, 3, 5, 7, 10])  # minor pentatonic: every note fits every genre
_TABLE = 4096  # wavetable length (power of two: the phase index wraps with a bit mask)


def _wavetable(brightness):
    """One period of a tone whose k-th partial has amplitude brightness**(k-1)."""
    x = np.arange(_TABLE) / _TABLE
    k = np.arange(1, 17)[:, None]
    table = (brightness ** (k - 1) * np.sin(2 * np.pi * k * x)).sum(axis=0)
    return (table / np.abs(table).max()).astype(np.float32)


def _drum(kind, sr, rng):
    """One hit as a float32 template: kick (falling sine), snare (noise + tone), hat (clicky)."""
    t = np.arange(int(0.15 * sr)) / sr
    if kind == "kick":
        f = 45 + 75 * np.exp(-t / 0.03)  # pitch drop 120 -> 45 Hz
        hit = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t / 0.06)
    elif kind == "snare":
        tone = 0.5 * np.sin(2 * np.pi * 185 * t)
        hit = (0.7 * rng.standard_normal(len(t)) + tone) * np.exp(-t / 0.04)
    else:
        t = t[: int(0.05 * sr)]
        hit = 0.4 * np.diff(rng.standard_normal(len(t) + 1)) * np.exp(-t / 0.01)  # diff = high-pass
    return hit.astype(np.float32)


def _place(y, template, starts):
    """Add copies of ``template`` into ``y`` at sample indices ``starts`` (in place)."""
    # A slice-add per hit (at most a few hundred) beats any gather/scatter over all samples.
    for s in starts:
        y[s:s + len(template)] += template[:len(y) - s]


def generate(label, index, sr=SR, duration=30.0, seed=0):
    """Synthesise one clip of a synthetic genre.

    Parameters
    ----------
    label : int
        Class 0..9 (``GENRES[label]`` names its style).
    index : int
        Clip number within the class; different indices give different clips.
    sr : int
        Sample rate in Hz.
    duration : float
        Length in seconds.
    seed : int
        Dataset seed; ``(seed, label, index)`` fixes the clip bit for bit.

    Returns
    -------
    y : np.ndarray, float32, shape (round(duration * sr),)
        Peak between 0.5 and 0.95, so within [-1, 1].
    """
    if not 0 <= label < len(GENRES):
        raise ValueError(f"label must be 0..{len(GENRES) - 1}, got {label}")
    st = STYLES[GENRES[label]]
    rng = np.random.default_rng([seed, label, index])
    n = round(duration * sr)
    t = np.arange(n, dtype=np.float64) / sr

    beat = 60.0 / (st.bpm * rng.uniform(0.92, 1.08))
    note_len = beat * st.note_beats
    pitches = np.array([m for m in range(st.low, st.high + 1) if (m % 12) in _PENTATONIC])
    notes = rng.choice(pitches, int(duration / note_len) + 1) + rng.integers(-3, 4)
    which = (t / note_len).astype(np.int64)
    step_per_sample = 440.0 * 2.0 ** ((notes - 69) / 12) * (_TABLE / sr)  # table steps, per note
    # Integrating frequency keeps the phase continuous across note changes (no clicks).
    phase = np.cumsum(step_per_sample[which]).astype(np.int64) & (_TABLE - 1)
    since_onset = (t - which * note_len).astype(np.float32)
    envelope = np.exp(-since_onset / np.float32(st.decay)) * np.minimum(1, since_onset / 0.005)
    y = _wavetable(st.brightness)[phase] * envelope
    if st.drive != 1.0:
        y = np.tanh(st.drive * y) / np.tanh(st.drive)

    step = beat / 2
    steps = np.arange(int(duration / step) + 1)
    for kind, pattern, level in (("kick", st.kick, 0.9), ("snare", st.snare, 0.6),
                                 ("hat", st.hat, 0.5)):
        hits = steps[np.array([pattern[s % 8] == "x" for s in steps], dtype=bool)]
        if hits.size:
            starts = np.round((hits * step + rng.normal(0, 0.004, hits.size)) * sr).astype(np.int64)
            _place(y, level * _drum(kind, sr, rng), np.clip(starts, 0, n - 1))

    # Uniform white noise (unit variance): a third of the cost of Gaussian, sounds the same.
    y += (st.noise * rng.uniform(0.5, 1.5) * np.sqrt(3)) * (2 * rng.random(n, dtype=np.float32) - 1)
    return (y * (rng.uniform(0.5, 0.95) / np.abs(y).max())).astype(np.float32)


def _wav_bytes(y, sr):
    buf = io.BytesIO()
    sf.write(buf, np.round(y * 32767).astype(np.int16), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def write_dataset(out_dir, n_per_class=10, duration=30.0, seed=0, classes=GENRES):
    """Write the synthetic genres as ``<out_dir>/<genre>/<genre>.NNNNN.wav``.

    16-bit PCM mono at 22050 Hz, GTZAN's format, so ``find_data``, ``list_tracks`` and the
    cache treat it like GTZAN. Each file is regenerated and rewritten (atomically) only
    when its bytes differ, so reruns leave existing files and their mtimes alone; clips of
    other indices (an earlier, larger ``n_per_class``) are removed, so exactly
    ``n_per_class`` remain.

    Parameters
    ----------
    out_dir : str or Path
    n_per_class : int
        Clips per class (indices 0..n_per_class-1).
    duration : float
        Clip length in seconds.
    seed : int
    classes : sequence of str
        Folder names. Class i plays ``GENRES[i % 10]``'s style with dataset seed ``seed + i // 10``,
        so more than ten classes (or other names) work too; names other than GTZAN's are
        file-named ``<name>.NNNNN.wav`` all the same.

    Returns
    -------
    Path
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    for i, name in enumerate(classes):
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        wanted = {f"{name}.{index:05d}.wav": index for index in range(n_per_class)}
        for old in folder.glob("*.wav"):
            if old.name not in wanted:
                old.unlink()
        for file, index in wanted.items():
            path = folder / file
            data = _wav_bytes(generate(i % len(GENRES), index, SR, duration, seed + i // len(GENRES)), SR)
            if path.is_file() and path.read_bytes() == data:
                continue
            atomic_write(path, lambda f: f.write(data))
    return out_dir
