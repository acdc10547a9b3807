"""The feature cache: every array the models read, each rebuilt exactly when its inputs change.

``ensure_features`` keeps ``<cache_root>/<data_name>/`` current for the arrays a command needs::

    files.txt       N relative paths: the rows, in order
    labels.npy      (N,)              int64 class index (``manifest["classes"]`` names them)
    lengths.npy     (N,)              int64 true length of each clip in samples at 22050 Hz
    wave.npy        (N, 661500)       int16 (x 2^-15) when every source is 16-bit PCM mono at 22050 Hz,
                                      else float32: the 30-s window of each clip, zero-padded
    mel_db.npy      (N, 128, 1292)    float32 dB mel of that window
    img400.npy      (N, 400, 400, 3)  uint8 image views (img360x120, img120: see ``features.images``)
    manifest.json   data identity, the rows' fingerprint, each array's fingerprint, shape and dtype,
                    config, versions, per-file status, timings

Rows are the files that decode and last at least ``MIN_SECONDS``; the others are skipped with a
one-line warning and recorded in the manifest. A clip of up to ``LONG_SECONDS`` keeps its first 30 s
(GTZAN's clips run to 30.37 s and the report used their first 30 s); a longer file (a whole song)
keeps its central 30 s, since a song's opening is often an intro unlike the rest of it.

Fingerprints. The rows' fingerprint covers the data (each file's relative path, size and mtime),
the minimum length, and the code versions that decide which files decode (``audio.VERSION``,
``VERSION``). Each array's fingerprint covers the rows' fingerprint plus exactly the settings and
code versions that decide its values: ``wave`` and ``lengths`` the rate and window, ``mel_db`` also
the mel settings and ``mel.VERSION``, an image view also its size and ``images.VERSION``,
``labels`` the class names. A comment edit or a speed-only rewrite changes none of them.

When the rows' fingerprint changed (files added, removed or edited) the cache is rebuilt whole in a
hidden temporary folder that is renamed into place when complete. Otherwise only the arrays that are
missing or stale are computed (an image view from the cached mel, without decoding), each written
to a temporary file and renamed into place, so a process reading the other arrays is not disturbed.
A current cache is not written to at all; an array a command does not need is left alone.
Every array loads with ``np.load(path, mmap_mode='r')`` (``Cache.array``).
"""

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import atomic_write, audio, dataset, images, mel, remove_orphans, temp_name, usable_cpus

FORMAT = 2
# Version of how this module turns decoded audio into rows (the window rule, the minimum length,
# int16 storage): bump it with any change that alters the rows or the wave/lengths values.
VERSION = 1
MIN_SECONDS = 1.0  # shorter clips are skipped: under a second holds too little music to label
LONG_SECONDS = 31.0  # longer clips keep their central 30 s rather than their first
CHUNK = 32  # clips decoded and transformed together: bounds memory (~85 MB of float32 audio)
DEFAULT_ARRAYS = ("labels", "lengths", "wave", "mel_db", "img400", "img360x120")


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """The settings that decide the cached values (defaults: the report's settings)."""

    sr: int = 22050
    duration: float = 30.0  # seconds kept per clip: 661500 samples
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float = None  # None: sr / 2
    top_db: float = 80.0


class CacheError(ValueError):
    """A missing or inconsistent cache, described in one line naming the file."""


def view_name(array: str):
    """The image view an array holds (``"img360x120"`` -> ``"360x120"``), None for other arrays."""
    view = array[3:] if array.startswith("img") else None
    return view if view in images.VIEWS else None


def known_arrays() -> tuple:
    """Every array name a cache can hold."""
    return ("labels", "lengths", "wave", "mel_db") + tuple(f"img{v}" for v in images.VIEWS)


class Cache(NamedTuple):
    """An opened cache folder; arrays are memory-mapped on demand with ``array``."""

    root: Path
    manifest: dict
    files: list
    labels: np.ndarray
    classes: list

    def fingerprint(self, name: str) -> str:
        """The fingerprint of array ``name`` (``"labels"``, ``"mel_db"``, ...) as built."""
        try:
            return self.manifest["arrays"][name]["fingerprint"]
        except KeyError:
            raise CacheError(f"{self.root / (name + '.npy')}: not in this cache "
                             f"(`python -m features` builds it)") from None

    def array(self, name: str) -> np.ndarray:
        """Memory-map ``<root>/<name>.npy`` read-only (e.g. ``"img400"``, ``"wave"``), one row per clip.

        Raises
        ------
        CacheError
            The array is missing, or its shape or dtype is not what the manifest records.
        """
        self.fingerprint(name)
        path = self.root / f"{name}.npy"
        try:
            arr = np.load(path, mmap_mode="r")
        except FileNotFoundError:
            raise CacheError(f"{path}: missing (`python -m features` rebuilds it)") from None
        except (ValueError, OSError) as err:
            raise CacheError(f"{path}: unreadable ({' '.join(str(err).split())}); "
                             f"`python -m features` rebuilds it") from None
        meta = self.manifest["arrays"][name]
        if list(arr.shape) != meta["shape"] or arr.dtype.name != meta["dtype"]:
            raise CacheError(f"{path}: {arr.dtype.name} {list(arr.shape)}, the manifest records "
                             f"{meta['dtype']} {meta['shape']}; `python -m features` rebuilds it")
        return arr


def open_cache(cache_dir) -> Cache:
    """Open a cache folder written by ``ensure_features``, checking that its parts agree.

    Raises
    ------
    CacheError
        One line naming the file that is missing or inconsistent.
    """
    root = Path(cache_dir)
    try:
        manifest = json.loads((root / "manifest.json").read_text())
        files = (root / "files.txt").read_text().splitlines()
        labels = np.load(root / "labels.npy")
    except FileNotFoundError as err:
        raise CacheError(f"{err.filename}: missing, no feature cache here (run `make features`)") from None
    except (json.JSONDecodeError, ValueError, AttributeError) as err:
        raise CacheError(f"{root}: unreadable cache ({' '.join(str(err).split())})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CacheError(f"{root / 'manifest.json'}: not a cache of format {FORMAT}; "
                         f"`python -m features` rebuilds it")
    classes = manifest.get("classes", [])
    if len(files) != len(labels) or len(files) != manifest.get("n"):
        raise CacheError(f"{root / 'files.txt'}: {len(files)} lines, labels.npy {len(labels)} rows, "
                         f"the manifest {manifest.get('n')}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise CacheError(f"{root / 'labels.npy'}: labels outside 0..{len(classes) - 1}")
    return Cache(root, manifest, files, labels.astype(np.int64), classes)


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def data_identity(tracks) -> str:
    """Hash of the dataset's files as listed: relative path, size and mtime of each (16 hex digits)."""
    h = hashlib.sha256()
    for t in tracks:
        st = t.path.stat()
        h.update(f"{t.relpath}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def rows_fingerprint(config: FeatureConfig, identity: str) -> str:
    """Fingerprint of which files become rows: the data, the minimum length, the decoding code."""
    return _hash({"data": identity, "sr": config.sr, "min_seconds": MIN_SECONDS,
                  "audio": audio.VERSION, "cache": VERSION})


def fingerprint(name: str, config: FeatureConfig, rows: str, classes) -> str:
    """Fingerprint of array ``name``: the rows plus exactly what decides its values.

    Parameters
    ----------
    name : str
        From ``known_arrays()``.
    config : FeatureConfig
    rows : str
        ``rows_fingerprint`` of the cache.
    classes : sequence of str
        The class names (they decide ``labels``).

    Returns
    -------
    str
        16 hex digits.
    """
    inputs = {"array": name, "rows": rows}
    if name == "labels":
        inputs["classes"] = list(classes)
    else:
        inputs.update(sr=config.sr, duration=config.duration, long_seconds=LONG_SECONDS)
    if name == "mel_db" or view_name(name):
        inputs.update(mel=mel.VERSION, n_fft=config.n_fft, hop_length=config.hop_length,
                      n_mels=config.n_mels, fmin=config.fmin, fmax=config.fmax, top_db=config.top_db)
    if view_name(name):
        inputs.update(images=images.VERSION, size=images.VIEWS[view_name(name)])
    return _hash(inputs)


def data_name(root: Path) -> str:
    """Name of a dataset folder for cache and run paths: the archive's own folders read as ``gtzan``."""
    root = Path(root).resolve()
    return "gtzan" if root.name in ("genres", "genres_original") else root.name


def stale_arrays(cache_dir, names, config: FeatureConfig, tracks, classes):
    """What ``cache_dir`` lacks for ``names``: None when its rows are not current (rebuild whole),
    else the tuple of arrays that are missing or stale (empty: the cache is current)."""
    try:
        manifest = json.loads((Path(cache_dir) / "manifest.json").read_text())
        arrays = manifest["arrays"]
        current = (manifest["format"] == FORMAT and manifest["rows_fingerprint"]
                   == rows_fingerprint(config, data_identity(tracks)))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not current:
        return None
    rows = manifest["rows_fingerprint"]
    return tuple(n for n in names if not (Path(cache_dir) / f"{n}.npy").is_file()
                 or arrays.get(n, {}).get("fingerprint") != fingerprint(n, config, rows, classes))


def _all_pcm16(tracks, sr: int) -> bool:
    """Whether every file is mono 16-bit PCM at ``sr``, so int16 stores the waveforms exactly."""
    for t in tracks:
        try:
            i = audio.info(t.path)
        except audio.AudioError:
            continue  # undecodable: skipped later, does not decide the dtype
        if (i.samplerate, i.channels, i.subtype) != (sr, 1, "PCM_16"):
            return False
    return True


def window(y: np.ndarray, n_samples: int, sr: int) -> np.ndarray:
    """The clip's 30-s window: the first ``n_samples`` (central ones beyond ``LONG_SECONDS``), zero-padded.

    Parameters
    ----------
    y : np.ndarray, shape (n,)
    n_samples : int
    sr : int

    Returns
    -------
    np.ndarray, shape (n_samples,), y's dtype
    """
    start = (len(y) - n_samples) // 2 if len(y) > LONG_SECONDS * sr else 0
    y = y[start:start + n_samples]
    return np.concatenate([y, np.zeros(n_samples - len(y), y.dtype)]) if len(y) < n_samples else y


def _decode(track, config: FeatureConfig, wave_dtype):
    """(window, true length in samples, note) of one track; window None when it is skipped."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if wave_dtype == np.int16:  # the exact samples, 5x faster than a float decode
                y = audio.load_pcm16(track.path, None)
            else:
                y = audio.load(track.path, sr=config.sr, duration=None)
        except audio.AudioError as err:
            return None, 0, str(err)
    if len(y) < MIN_SECONDS * config.sr:
        return None, len(y), f"{track.path}: {len(y) / config.sr:.2f} s long, under the {MIN_SECONDS:g}-s minimum"
    n_samples = int(round(config.sr * config.duration))
    return window(y, n_samples, config.sr), len(y), "; ".join(str(w.message) for w in caught) or "ok"


def _shapes(config: FeatureConfig, wave_dtype) -> dict:
    """name -> (row shape, dtype) of every known array."""
    n_samples = int(round(config.sr * config.duration))
    out = {"labels": ((), np.int64), "lengths": ((), np.int64), "wave": ((n_samples,), wave_dtype),
           "mel_db": ((config.n_mels, mel.n_frames(n_samples, config.n_fft, config.hop_length)), np.float32)}
    out.update({f"img{v}": ((h, w, 3), np.uint8) for v, (w, h) in images.VIEWS.items()})
    return out


class _Pass(NamedTuple):
    status: list  # per input track: {"relpath", "status", "note"}
    kept: list  # the tracks that became rows
    timings: dict


def _compute(tracks, names, config, wave_dtype, write, mel_source, jobs, progress, label) -> _Pass:
    """One pass over ``tracks`` computing the arrays ``names``; ``write(rows, {name: values})`` stores them.

    Decodes only when a waveform, a length or a mel must be computed; image views come from
    ``mel_source`` (a current cached mel, row-aligned with ``tracks``) when it is given.
    """
    from tqdm import tqdm

    views = tuple(view_name(n) for n in names if view_name(n))
    need_mel = "mel_db" in names or (views and mel_source is None)
    decode = need_mel or {"wave", "lengths"} & set(names)
    status, kept = [], []
    timings = dict.fromkeys(("decode", "mel", "images", "write"), 0.0)
    bar = tqdm(total=len(tracks), unit="clip", desc=f"features {label}", disable=not progress,
               file=sys.stderr)
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for start in range(0, len(tracks), CHUNK):
            chunk = tracks[start:start + CHUNK]
            t0 = time.perf_counter()
            loaded = (pool.map(lambda t: _decode(t, config, wave_dtype), chunk) if decode
                      else [(None, None, "ok")] * len(chunk))
            good = []
            for track, (y, n, note) in zip(chunk, loaded):
                ok = y is not None or not decode
                status.append({"relpath": track.relpath, "status": "ok" if ok else "skipped", "note": note})
                if ok:
                    good.append((track, y, n))
                if note != "ok":
                    bar.write(f"warning: {'' if ok else 'skipped '}{note}", file=sys.stderr)
            t1 = time.perf_counter()
            timings["decode"] += t1 - t0
            if good:
                rows = slice(len(kept), len(kept) + len(good))
                out = {"labels": np.array([t.label for t, _, _ in good], np.int64)}
                if decode:
                    wave = np.stack([y for _, y, _ in good])
                    out.update(wave=wave, lengths=np.array([n for _, _, n in good], np.int64))
                if need_mel:
                    # int16 k -> k / 32768, exactly as audio.load() decodes 16-bit PCM
                    y = wave * np.float32(2.0 ** -15) if wave_dtype == np.int16 else wave
                    S = out["mel_db"] = mel.mel_db(y, sr=config.sr, n_fft=config.n_fft,
                                                   hop_length=config.hop_length, n_mels=config.n_mels,
                                                   fmin=config.fmin, fmax=config.fmax, top_db=config.top_db)
                else:
                    S = None if not views else mel_source[rows]
                t2 = time.perf_counter()
                if views:
                    made = list(pool.map(lambda s: images.image_views(s, views, config.top_db), S))
                    out.update({f"img{v}": np.stack([m[v] for m in made]) for v in views})
                t3 = time.perf_counter()
                write(rows, {n: out[n] for n in names})
                kept.extend(t for t, _, _ in good)
                timings["mel"] += t2 - t1
                timings["images"] += t3 - t2
                timings["write"] += time.perf_counter() - t3
            bar.update(len(chunk))
    bar.close()
    return _Pass(status, kept, timings)


def _open_outputs(folder: Path, names, n_rows: int, shapes: dict, suffix: str) -> dict:
    return {n: np.lib.format.open_memmap(folder / f"{n}.npy{suffix}", mode="w+", dtype=shapes[n][1],
                                         shape=(n_rows,) + shapes[n][0]) for n in names}


def _versions() -> dict:
    import numba
    import PIL
    import scipy
    import soundfile

    return {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "numba": numba.__version__, "soundfile": soundfile.__version__, "pillow": PIL.__version__}


def _array_entries(manifest, names, config, shapes, n_rows):
    rows = manifest["rows_fingerprint"]
    for n in names:
        manifest["arrays"][n] = {"fingerprint": fingerprint(n, config, rows, manifest["classes"]),
                                 "dtype": np.dtype(shapes[n][1]).name, "shape": [n_rows, *shapes[n][0]]}


def _writer(out: dict):
    """``write(rows, values)`` for ``_compute``: store each array's rows in its memmap."""
    def write(rows, values):
        for n, v in values.items():
            out[n][rows] = v
    return write


def _finish(out: dict, n_kept: int) -> None:
    """Flush and close the memmaps in ``out``, cut to their first ``n_kept`` rows when files were skipped."""
    for name, arr in list(out.items()):
        arr.flush()
        if n_kept < len(arr):  # rare (undecodable files): rewrite at the final length
            path = Path(arr.filename)
            cut = path.with_name(path.name + ".cut")
            small = np.lib.format.open_memmap(cut, mode="w+", dtype=arr.dtype, shape=(n_kept,) + arr.shape[1:])
            for i in range(0, n_kept, CHUNK):
                small[i:i + CHUNK] = arr[i:min(i + CHUNK, n_kept)]
            small.flush()
            del small
            os.replace(cut, path)
        del out[name], arr


def build_cache(root, cache_dir, config: FeatureConfig = FeatureConfig(), jobs: int = None,
                progress: bool = True, arrays=DEFAULT_ARRAYS) -> Path:
    """Decode every track under ``root`` once and write a whole new cache folder ``cache_dir``.

    Parameters
    ----------
    root : path
        Dataset folder of ``<genre>/<file>`` (see ``features.dataset.list_tracks``).
    cache_dir : path
        Destination folder; replaced atomically when the build completes.
    config : FeatureConfig
    jobs : int, optional
        Threads for decoding and image resizing, and numba threads for the mel; default: all cores.
    progress : bool
        Show a tqdm progress bar.
    arrays : sequence of str
        Arrays to build (``labels`` and ``lengths`` always are).

    Returns
    -------
    Path
        ``cache_dir``.

    Raises
    ------
    dataset.DataError
        No audio file is found, fewer than two classes, or no file decodes.
    """
    root, cache_dir = Path(root), Path(cache_dir)
    tracks, classes = _tracks_and_classes(root)
    jobs = _set_threads(jobs)
    names = _with_rows(arrays)
    wave_dtype = np.int16 if config.sr == audio.SR and _all_pcm16(tracks, config.sr) else np.float32
    shapes = _shapes(config, wave_dtype)
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(cache_dir, "partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        out = _open_outputs(tmp, names, len(tracks), shapes, "")
        done = _compute(tracks, names, config, wave_dtype, _writer(out), None, jobs, progress, cache_dir.name)
        if not done.kept:
            raise dataset.DataError(f"{root}: none of the {len(tracks)} audio files is usable")
        t0 = time.perf_counter()
        _finish(out, len(done.kept))
        (tmp / "files.txt").write_text("".join(t.relpath + "\n" for t in done.kept))
        done.timings["write"] += time.perf_counter() - t0
        manifest = {
            "format": FORMAT, "data_name": cache_dir.name, "data_root": str(root.resolve()),
            "data_identity": data_identity(tracks),
            "rows_fingerprint": rows_fingerprint(config, data_identity(tracks)),
            "classes": list(classes), "n": len(done.kept), "n_skipped": len(tracks) - len(done.kept),
            "config": dataclasses.asdict(config),
            "wave": {"dtype": np.dtype(wave_dtype).name, "scale": 2.0 ** -15 if wave_dtype == np.int16 else 1.0},
            "arrays": {}, "versions": _versions(), "threads": jobs,
            "timings": {k: round(v, 3) for k, v in done.timings.items()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": done.status,
        }
        _array_entries(manifest, names, config, shapes, len(done.kept))
        atomic_write(tmp / "manifest.json", lambda f: f.write(json.dumps(manifest, indent=1).encode()))
        old = temp_name(cache_dir, "old")
        if cache_dir.exists():
            os.replace(cache_dir, old)
        os.replace(tmp, cache_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache_dir


def add_arrays(root, cache_dir, names, config: FeatureConfig = FeatureConfig(), jobs: int = None,
               progress: bool = True) -> Path:
    """Compute the arrays ``names`` for the current rows of ``cache_dir`` and rename each into place.

    Raises
    ------
    CacheError
        A row's file no longer decodes (the caller rebuilds the cache whole).
    """
    root, cache_dir = Path(root), Path(cache_dir)
    c = open_cache(cache_dir)
    by_path = {t.relpath: t for t in dataset.list_tracks(root)}
    tracks = [by_path[f] for f in c.files]
    jobs = _set_threads(jobs)
    wave_dtype = np.dtype(c.manifest["wave"]["dtype"]).type
    shapes = _shapes(config, wave_dtype)
    manifest = {**c.manifest, "classes": list(dataset.classes(root)), "arrays": dict(c.manifest["arrays"])}
    rows = manifest["rows_fingerprint"]
    mel_source = None
    if ("mel_db" not in names and any(view_name(n) for n in names)
            and manifest["arrays"].get("mel_db", {}).get("fingerprint")
            == fingerprint("mel_db", config, rows, manifest["classes"])):
        mel_source = c.array("mel_db")  # current: the views need no decoding
    suffix = f".partial-{os.getpid()}"
    out = _open_outputs(cache_dir, names, len(tracks), shapes, suffix)
    try:
        done = _compute(tracks, names, config, wave_dtype, _writer(out), mel_source, jobs, progress,
                        cache_dir.name)
        if len(done.kept) != len(tracks):
            raise CacheError(f"{cache_dir}: a file of the cache no longer decodes; rebuilding it whole")
        _finish(out, len(tracks))
        for n in names:
            os.replace(cache_dir / f"{n}.npy{suffix}", cache_dir / f"{n}.npy")
        _array_entries(manifest, names, config, shapes, len(tracks))
        manifest["timings"] = {k: round(v, 3) for k, v in done.timings.items()}
        atomic_write(cache_dir / "manifest.json", lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    finally:
        out.clear()
        for n in names:
            (cache_dir / f"{n}.npy{suffix}").unlink(missing_ok=True)
    return cache_dir


def _tracks_and_classes(root):
    tracks = dataset.list_tracks(root)
    classes = dataset.classes(root)
    if len(classes) < 2:
        raise dataset.DataError(f"{root}: only one class folder ({classes[0]}); a classifier needs two or more")
    return tracks, classes


def _set_threads(jobs):
    import numba

    jobs = jobs or usable_cpus()
    numba.set_num_threads(min(jobs, numba.config.NUMBA_NUM_THREADS))
    return jobs


def _with_rows(arrays) -> tuple:
    names = tuple(dict.fromkeys(("labels", "lengths") + tuple(arrays)))
    unknown = [n for n in names if n not in known_arrays()]
    if unknown:
        raise CacheError(f"unknown cache array {unknown[0]!r}; choose from {', '.join(known_arrays())}")
    return names


@contextlib.contextmanager
def _lock(path: Path):
    """Hold an exclusive lock on ``path`` (one builder per cache); says so when another holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: no locking; do not run two builders at once there
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"{path.parent}: another process is building this cache; waiting for it", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def locate_data(data=None, synthetic=20):
    """The data root: ``data`` > ``$GTZAN_DIR`` > ``data/gtzan/`` > the synthetic set (said loudly).

    Data that is named (``data``, ``$GTZAN_DIR``) but unusable is an error, never a fallback.
    ``synthetic=None`` raises instead of falling back.
    """
    root = dataset.find_data(data)
    if root is not None:
        return root
    if synthetic is None:
        raise dataset.DataError(f"no GTZAN data found: {dataset.WHERE_TO_PUT}")
    print(f"NOTE: no GTZAN data found, so this runs on the SYNTHETIC genre set ({synthetic} clips per "
          f"class); its numbers say nothing about music. To use GTZAN: {dataset.WHERE_TO_PUT}", flush=True)
    from . import synth
    return synth.write_dataset(dataset.REPO / "data" / "synthetic", n_per_class=synthetic)


def ensure_features(data=None, cache_root="cache", force=False, config: FeatureConfig = FeatureConfig(),
                    arrays=DEFAULT_ARRAYS, synthetic=20, jobs=None, progress=True, log=None) -> Path:
    """Find the data, bring its cache up to date for ``arrays``, and return the cache folder.

    Parameters
    ----------
    data : path, optional
        ``--data``; else ``$GTZAN_DIR``; else ``data/gtzan/``; else the synthetic set.
    cache_root : path
        Caches go to ``<cache_root>/<data_name>/``.
    force : bool
        Rebuild the whole cache even when it is current.
    arrays : sequence of str
        The arrays the caller needs (``labels`` and ``lengths`` always).
    synthetic : int or None
        Clips per class of the synthetic genre set used when no data is found (written to
        ``data/synthetic/`` in the repo, cached as ``synthetic``). None: raise instead.
    log : callable, optional
        Receives one line saying what was built (or that nothing was).

    Raises
    ------
    dataset.DataError
        Named data unusable, no data (``synthetic`` None), one class, or no file decodes.
    CacheError
        Unknown array names.
    """
    root = locate_data(data, synthetic)
    cache_dir = Path(cache_root) / data_name(root)
    names = _with_rows(arrays)
    with _lock(Path(cache_root) / f".{cache_dir.name}.lock"):
        remove_orphans(cache_root)
        remove_orphans(cache_dir)
        tracks, classes = _tracks_and_classes(root)
        stale = None if force else stale_arrays(cache_dir, names, config, tracks, classes)
        if stale:
            try:
                add_arrays(root, cache_dir, stale, config, jobs=jobs, progress=progress)
            except CacheError as err:
                print(f"note: {err}", file=sys.stderr)
                stale = None
        if stale is None:
            build_cache(root, cache_dir, config, jobs=jobs, progress=progress, arrays=names)
    if log:
        log(f"{cache_dir}: " + ("current, nothing rebuilt" if stale == () else
                                "built " + ", ".join(names if stale is None else stale)))
    return cache_dir
