"""The feature cache: one pass over a dataset writes every array the models read.

``build_cache`` decodes each clip once and writes, into ``<cache_root>/<data_name>/``::

    wave.npy        (N, 661500)       int16 (x 2^-15) when every source is 16-bit PCM mono at 22050 Hz,
                                      else float32
    mel_db.npy      (N, 128, 1292)    float32 dB mel
    img400.npy      (N, 400, 400, 3)  uint8     (and img360x120.npy, optional img120.npy)
    labels.npy      (N,)              int64
    files.txt       N relative paths, row-aligned with the arrays
    manifest.json   data identity, config + its hash, versions, per-file status, timings

N counts the files that decoded; the others are skipped with a one-line warning and recorded in the
manifest. Every array loads with ``np.load(..., mmap_mode='r')``. The cache is built in a hidden
temporary folder and renamed into place only when complete, so an interrupted run leaves nothing
that looks valid. It is rebuilt only when the data (paths, sizes, mtimes), the config or the feature
code changed.
"""

import concurrent.futures
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

from . import audio, dataset, images, mel

CACHE_FORMAT = 1
CHUNK = 32  # clips decoded and transformed together: bounds memory (~85 MB of float32 audio)


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Everything that decides the cached arrays' values (defaults: the report's settings)."""

    sr: int = 22050
    duration: float = 30.0  # seconds kept per clip: 661500 samples
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float = None  # None: sr / 2
    top_db: float = 80.0
    views: tuple = images.DEFAULT_VIEWS


class CacheError(ValueError):
    """A missing or inconsistent cache, described in one line naming the file."""


class Cache(NamedTuple):
    """An opened cache folder; arrays are memory-mapped on demand with ``array``."""

    root: Path
    manifest: dict
    files: list
    labels: np.ndarray
    classes: list

    def array(self, name: str) -> np.ndarray:
        """Memory-map ``<root>/<name>.npy`` read-only (e.g. ``"img400"``, ``"wave"``), one row per clip.

        Raises
        ------
        CacheError
            The array is missing or its rows do not match the clips.
        """
        path = self.root / f"{name}.npy"
        try:
            arr = np.load(path, mmap_mode="r")
        except FileNotFoundError:
            raise CacheError(f"{path}: missing (the cache was built without the {name!r} view)") from None
        if len(arr) != len(self.labels):
            raise CacheError(f"{path}: {len(arr)} rows but the cache has {len(self.labels)} clips")
        return arr


def open_cache(cache_dir) -> Cache:
    """Open a cache folder written by ``build_cache``, checking that its parts agree.

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
    except (json.JSONDecodeError, ValueError) as err:
        raise CacheError(f"{root}: unreadable cache ({err})") from None
    classes = manifest.get("classes", [])
    if len(files) != len(labels):
        raise CacheError(f"{root / 'files.txt'}: {len(files)} lines but labels.npy has {len(labels)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise CacheError(f"{root / 'labels.npy'}: labels outside 0..{len(classes) - 1}")
    return Cache(root, manifest, files, labels.astype(np.int64), classes)


def _code_hash() -> str:
    """Hash of the feature code, so a change to how features are computed invalidates caches."""
    h = hashlib.sha256()
    for module in (audio, mel, images):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()


def config_hash(config: FeatureConfig) -> str:
    """Short hash of the config and the feature code (16 hex digits)."""
    text = json.dumps(dataclasses.asdict(config), sort_keys=True) + _code_hash()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def data_identity(tracks) -> str:
    """Hash of the dataset's files as listed: relative path, size and mtime of each (16 hex digits)."""
    h = hashlib.sha256()
    for t in tracks:
        st = t.path.stat()
        h.update(f"{t.relpath}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def data_name(root: Path) -> str:
    """Name of a dataset folder for cache and run paths: the archive's own folders read as ``gtzan``."""
    root = Path(root).resolve()
    return "gtzan" if root.name in ("genres", "genres_original") else root.name


def is_current(cache_dir, config: FeatureConfig, tracks) -> bool:
    """Whether ``cache_dir`` holds a complete cache of these tracks made with this config and code."""
    try:
        manifest = json.loads((Path(cache_dir) / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return (manifest.get("format") == CACHE_FORMAT
            and manifest.get("config_hash") == config_hash(config)
            and manifest.get("data_identity") == data_identity(tracks))


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


def _versions() -> dict:
    import numba
    import PIL
    import scipy
    import soundfile

    return {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "numba": numba.__version__, "soundfile": soundfile.__version__, "pillow": PIL.__version__}


def build_cache(root, cache_dir, config: FeatureConfig = FeatureConfig(), jobs: int = None,
                progress: bool = True) -> Path:
    """Decode every track under ``root`` once and write the cache folder ``cache_dir``.

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

    Returns
    -------
    Path
        ``cache_dir``.

    Raises
    ------
    dataset.DataError
        When no audio file is found, or none decodes.
    """
    import numba
    from tqdm import tqdm

    root, cache_dir = Path(root), Path(cache_dir)
    tracks = dataset.list_tracks(root)
    if not tracks:
        raise dataset.DataError(f"{root}: no audio files in <genre>/<file> folders")
    jobs = jobs or os.cpu_count()
    numba.set_num_threads(min(jobs, numba.config.NUMBA_NUM_THREADS))
    n_samples = int(round(config.sr * config.duration))
    wave_dtype = np.int16 if config.sr == audio.SR and _all_pcm16(tracks, config.sr) else np.float32
    n_frames = 1 + n_samples // config.hop_length

    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir.parent / f".{cache_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        shapes = {"wave": (n_samples,), "mel_db": (config.n_mels, n_frames)}
        shapes.update({f"img{v}": (images.VIEWS[v][1], images.VIEWS[v][0], 3) for v in config.views})
        dtypes = {"wave": wave_dtype, "mel_db": np.float32}
        out = {name: np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+",
                                               dtype=dtypes.get(name, np.uint8),
                                               shape=(len(tracks),) + shape)
               for name, shape in shapes.items()}
        status, kept = [], []
        timings = dict.fromkeys(("decode", "mel", "images", "write"), 0.0)

        def load(track):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    if wave_dtype == np.int16:  # the exact samples, 5x faster than a float decode
                        y = audio.load_pcm16(track.path, n_samples)
                    else:
                        y = audio.load(track.path, sr=config.sr, duration=config.duration)
                except audio.AudioError as err:
                    return None, str(err)
            return y, "; ".join(str(w.message) for w in caught) or "ok"

        bar = tqdm(total=len(tracks), unit="clip", desc=f"features {cache_dir.name}",
                   disable=not progress, file=sys.stderr)
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            for start in range(0, len(tracks), CHUNK):
                chunk = tracks[start:start + CHUNK]
                t0 = time.perf_counter()
                loaded = list(pool.map(load, chunk))
                t1 = time.perf_counter()
                good = []
                for track, (y, note) in zip(chunk, loaded):
                    status.append({"relpath": track.relpath, "status": "ok" if y is not None else "skipped",
                                   "note": note})
                    if y is None:
                        bar.write(f"warning: skipped {note}", file=sys.stderr)
                    else:
                        good.append((track, y))
                        if note != "ok":
                            bar.write(f"warning: {note}", file=sys.stderr)
                if good:
                    rows = slice(len(kept), len(kept) + len(good))
                    wave = np.stack([g[1] for g in good])
                    # int16 k -> k / 32768, exactly as audio.load() decodes 16-bit PCM
                    y = wave * np.float32(2.0 ** -15) if wave_dtype == np.int16 else wave
                    S = mel.mel_db(y, sr=config.sr, n_fft=config.n_fft, hop_length=config.hop_length,
                                   n_mels=config.n_mels, fmin=config.fmin, fmax=config.fmax,
                                   top_db=config.top_db)
                    t2 = time.perf_counter()
                    views = list(pool.map(lambda s: images.image_views(s, config.views, config.top_db), S))
                    t3 = time.perf_counter()
                    out["wave"][rows] = wave
                    out["mel_db"][rows] = S
                    for v in config.views:
                        out[f"img{v}"][rows] = np.stack([d[v] for d in views])
                    kept.extend(t for t, _ in good)
                    timings["mel"] += t2 - t1
                    timings["images"] += t3 - t2
                    timings["write"] += time.perf_counter() - t3
                timings["decode"] += t1 - t0
                bar.update(len(chunk))
        bar.close()
        if not kept:
            raise dataset.DataError(f"{root}: none of the {len(tracks)} audio files decoded")

        t0 = time.perf_counter()
        for name, arr in out.items():
            arr.flush()
            if len(kept) < len(tracks):  # rare (undecodable files): rewrite at the final length
                small = np.lib.format.open_memmap(tmp / f"{name}.tmp.npy", mode="w+", dtype=arr.dtype,
                                                  shape=(len(kept),) + arr.shape[1:])
                for i in range(0, len(kept), CHUNK):
                    small[i:i + CHUNK] = arr[i:min(i + CHUNK, len(kept))]
                small.flush()
                del small
                os.replace(tmp / f"{name}.tmp.npy", tmp / f"{name}.npy")
        del out, arr
        np.save(tmp / "labels.npy", np.array([t.label for t in kept], dtype=np.int64))
        (tmp / "files.txt").write_text("".join(t.relpath + "\n" for t in kept))
        timings["write"] += time.perf_counter() - t0
        manifest = {
            "format": CACHE_FORMAT,
            "data_name": cache_dir.name,
            "data_root": str(root.resolve()),
            "data_identity": data_identity(tracks),
            "classes": list(dataset.classes(root)),
            "n": len(kept),
            "n_skipped": len(tracks) - len(kept),
            "config": dataclasses.asdict(config),
            "config_hash": config_hash(config),
            "wave": {"dtype": np.dtype(wave_dtype).name,
                     "scale": 2.0 ** -15 if wave_dtype == np.int16 else 1.0},
            "versions": _versions(),
            "threads": jobs,
            "timings": {k: round(v, 3) for k, v in timings.items()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": status,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        old = cache_dir.parent / f".{cache_dir.name}.old-{os.getpid()}"
        if cache_dir.exists():
            os.replace(cache_dir, old)
        os.replace(tmp, cache_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache_dir


def ensure_features(data=None, cache_root="cache", force=False, config: FeatureConfig = FeatureConfig(),
                    synthetic=None, jobs=None, progress=True) -> Path:
    """Find the data, (re)build its cache when stale, and return the cache folder.

    Parameters
    ----------
    data : path, optional
        ``--data``; else ``$GTZAN_DIR``; else ``data/gtzan/`` (see ``features.dataset.find_data``).
    cache_root : path
        Caches go to ``<cache_root>/<data_name>/``.
    force : bool
        Rebuild even when the cache is current.
    synthetic : int, optional
        When no data is found: clips per class of the synthetic genre set to use instead
        (written to ``data/synthetic/`` in the repo, cached as ``synthetic``). None: raise instead.

    Raises
    ------
    dataset.DataError
        No data found (and ``synthetic`` is None), or no file decodes.
    """
    root = dataset.find_data(data)
    if root is None:
        if synthetic is None:
            raise dataset.DataError(f"no GTZAN data found: {dataset.WHERE_TO_PUT}")
        print(f"no GTZAN data found (to use it: {dataset.WHERE_TO_PUT}); using the synthetic genre "
              f"set ({synthetic} clips per class) instead", file=sys.stderr)
        from . import synth
        root = synth.write_dataset(dataset.REPO / "data" / "synthetic", n_per_class=synthetic)
    cache_dir = Path(cache_root) / data_name(root)
    if force or not is_current(cache_dir, config, dataset.list_tracks(root)):
        build_cache(root, cache_dir, config, jobs=jobs, progress=progress)
    return cache_dir
