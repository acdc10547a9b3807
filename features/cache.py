"""The feature cache: every array the models read, each rebuilt exactly when its inputs change.

``ensure_features`` keeps ``<cache_root>/<data_name>/`` current for the arrays a command needs::

    files.txt       N relative paths: the rows, in order
    labels.npy      (N,)              int64 class index (``manifest["classes"]`` names them)
    lengths.npy     (N,)              int64 true length of each clip in samples at 22050 Hz
    wave.npy        (N, 661500)       int16 (x 2^-15) when every source is 16-bit PCM mono at 22050 Hz,
                                      else float32: the 30-s window of each clip, zero-padded
    mel_db.npy      (N, 128, 1292)    float32 dB mel of that window
    img400.npy      (N, 400, 400, 3)  uint8 image views (img360x120, img120: see ``features.images``)
    musicnn.npy     (N, 10, F)        float32 features of a pretrained backbone per 3-s patch of the
                                      window (``features.backbone``; zero beyond the clip's patches)
    manifest.json   data identity, the rows' fingerprint, each array's fingerprint, shape and dtype,
                    config, versions, per-file status, timings

Rows are the files that decode and last at least ``MIN_SECONDS``; the others are skipped with a
one-line warning and recorded in the manifest. Each row is computed by ``features.clips``, the code
that also turns a file into model inputs for ``predict.py``: its 30-s window (the first 30 s of a clip
of up to ``LONG_SECONDS``, the central 30 s of a longer one), dB mel, image views and embedding.

Fingerprints. The rows' fingerprint covers the data (each file's relative path, size and mtime),
the minimum length, and the code versions that decide which files decode (``audio.VERSION``,
``VERSION``). Each array's fingerprint covers the rows' fingerprint plus exactly the settings and
code versions that decide its values: ``wave`` and ``lengths`` the rate and window, ``mel_db`` also
the mel settings and ``mel.VERSION``, an image view also its size and ``images.VERSION``,
``labels`` the class names, an embedding (``musicnn``) the window, ``backbone.VERSION``,
``mel.VERSION`` and the network's identity (its weights' sha256 and code version). A comment edit or
a speed-only rewrite changes none of them.

Embeddings. The network that computes an embedding lives in ``models/`` (this layer imports no
model): a caller that needs one passes it as a ``features.backbone.Embedder`` (``run_all.py`` does
for ``best``); the array is then built, checked and rebuilt like any other.

When the rows' fingerprint changed (files added, removed or edited) the cache is rebuilt whole in a
hidden temporary folder that is renamed into place when complete. Otherwise only the arrays that are
missing or stale are computed (an image view from the cached mel, without decoding), each written
to a temporary file and renamed into place, so a process reading the other arrays is not disturbed.
A current cache is not written to at all; an array a command does not need is left alone.
Every array loads with ``np.load(path, mmap_mode='r')`` (``Cache.array``).

What is checked, when. At write time the manifest records a crc32 of every file (``arrays[name].checksum``,
``small_files["files.txt"]``) and its own checksum (``checksum``, over its content without it).

- ``open_cache`` (every open): the manifest (JSON, format, its checksum); ``files.txt`` (checksum,
  line count against ``n``); ``labels.npy`` (shape, dtype, checksum, labels in range).
- ``Cache.array`` (every call): the array's shape and dtype against the manifest (which records ``n``
  rows), and on its first call per file in a process its checksum (``checksum``: ~1.3 s for all of
  GTZAN's 2.6 GB from the page cache on 2 loaded cores; a model reads every row each epoch anyway).
- ``ensure_features`` (``python -m features``, ``run_all.py``): all of the above for the arrays the
  command needs; a cache whose manifest, ``files.txt`` or ``labels.npy`` fails is rebuilt whole, an
  array that fails is rebuilt alone, each with a one-line note. A cache written without checksums
  (before them, or by hand) is rebuilt whole; ``open_cache`` alone still reads it.
- ``verify_cache`` (``python -m features verify``): everything, for every array in the manifest.

Interruptions. Every file is written under a temporary name owned by this process and renamed into
place when complete, the manifest last. ``ensure_features`` holds a file lock while it checks and
builds, so a second builder waits, then finds the first one's work current. Holding it, it first
mends a whole rebuild killed between its two renames (``features.files.finish_replace``) and removes
every temporary entry of its cache, whatever the pid in its name (a killed builder may be an unreaped
zombie, or its pid reused), and other caches' entries whose owner is gone
(``features.files.remove_orphans``).
A write that fails (disk full, read-only, no permission, file size limit) removes its temporary
files, leaves the previous cache as it was, and is reported in one line naming the folder and what
to do.

Run records. A run records the settings and code fingerprint of the array its model reads
(``feature_record``); ``record_problem`` says when this code no longer computes those features.
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import audio, backbone, dataset, images, mel, usable_cpus, versions
from .clips import (LONG_SECONDS, MIN_SECONDS, FeatureConfig, config_from_record, decode, embed_clips, mel_db_of,
                    views_of)
from .files import (finish_replace, folder_lock, kill_point, remove_orphans, replace_folder, temp_name, write_advice,
                    write_json)

FORMAT = 2
# Version of how decoded audio becomes rows (``features.clips``: the window rule, the minimum length;
# int16 storage): bump it with any change that alters the rows or the wave/lengths values.
VERSION = 1
CHUNK = 32  # clips decoded and transformed together: bounds memory (~85 MB of float32 audio)
DEFAULT_ARRAYS = ("labels", "lengths", "wave", "mel_db", "img400", "img360x120")
HASH_CHUNK = 1 << 20  # bytes read and hashed per call: fits the CPU cache, amortises the call


class CacheError(ValueError):
    """A missing or inconsistent cache, described in one line naming the file."""


def view_name(array: str):
    """The image view an array holds (``"img360x120"`` -> ``"360x120"``), None for other arrays."""
    view = array[3:] if array.startswith("img") else None
    return view if view in images.VIEWS else None


def known_arrays(embedder=None) -> tuple:
    """Every array name a cache can hold (with ``embedder``: its array too)."""
    own = ("labels", "lengths", "wave", "mel_db") + tuple(f"img{v}" for v in images.VIEWS)
    return own + ((embedder.name,) if embedder else ())


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

        Its structure is checked on every call, its checksum on the first call per file in a process.

        Raises
        ------
        CacheError
            The array is missing, unreadable, of another shape or dtype than the manifest records, or
            its content does not match its checksum.
        """
        self.fingerprint(name)
        return _load_array(self.root / f"{name}.npy", self.manifest["arrays"][name])


def _one_line(err) -> str:
    return " ".join(str(err).split())


def _damaged(path) -> CacheError:
    return CacheError(f"{path}: content does not match its checksum (damaged); `python -m features` rebuilds it")


def checksum(path) -> str:
    """``"crc32:<8 hex digits>"`` of a file's bytes, read in 1-MiB chunks into one reused buffer.

    zlib's crc32 hashes 3-7 GB/s from memory here (sha1 1-2, sha256 1.6-2, blake2b 1.4, md5
    0.85 GB/s); reading into a buffer that stays in the CPU cache beats a memory map by ~30 %. A
    GTZAN cache's 2.6 GB of arrays take ~1.3 s from the page cache on 2 loaded cores. It detects
    damage, not tampering.
    """
    buf = bytearray(HASH_CHUNK)
    view, crc = memoryview(buf), 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            crc = zlib.crc32(view[:n], crc)
    return f"crc32:{crc:08x}"


# Files whose checksum matched in this process, by path, inode, size and mtime: ensure_features and
# the Cache.array calls that follow it hash each array once, not once per call.
_VERIFIED = set()


def _verify(path: Path, expected) -> None:
    """Raise unless ``path`` hashes to ``expected`` (None: a cache written without checksums)."""
    if expected is None:
        return
    st = path.stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, expected)
    if key not in _VERIFIED:
        if checksum(path) != expected:
            raise _damaged(path)
        _VERIFIED.add(key)


def _load_array(path: Path, meta: dict) -> np.ndarray:
    """Memory-map the array ``path`` after checking its shape and dtype, then its checksum, against ``meta``."""
    try:
        arr = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise CacheError(f"{path}: missing (`python -m features` rebuilds it)") from None
    except (ValueError, OSError, EOFError) as err:  # EOFError: an empty file
        raise CacheError(f"{path}: unreadable ({_one_line(err)}); `python -m features` rebuilds it") from None
    if list(arr.shape) != meta["shape"] or arr.dtype.name != meta["dtype"]:
        raise CacheError(f"{path}: {arr.dtype.name} {list(arr.shape)}, the manifest records "
                         f"{meta['dtype']} {meta['shape']}; `python -m features` rebuilds it")
    _verify(path, meta.get("checksum"))
    return arr


def _manifest_checksum(manifest: dict) -> str:
    """Checksum of a manifest's content, itself left out (it is stored in the manifest)."""
    return _hash({k: v for k, v in manifest.items() if k != "checksum"})


def read_manifest(cache_dir) -> dict:
    """The manifest of a cache folder, checked: JSON, this module's format, its own checksum.

    Raises
    ------
    CacheError
        Missing, unreadable, of another format, or edited or damaged.
    """
    path = Path(cache_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise CacheError(f"{path}: missing, no feature cache here (run `make features`)") from None
    except (OSError, ValueError) as err:  # ValueError: bad JSON or bad UTF-8
        raise CacheError(f"{path}: unreadable ({_one_line(err)}); `python -m features` rebuilds it") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CacheError(f"{path}: not a cache of format {FORMAT}; `python -m features` rebuilds it")
    if "checksum" in manifest and manifest["checksum"] != _manifest_checksum(manifest):
        raise _damaged(path)
    return manifest


def _read_files(path: Path, manifest: dict) -> list:
    """The rows' relative paths from ``files.txt``, checked against the manifest's checksum."""
    try:
        data = path.read_bytes()
        files = data.decode().splitlines()
    except FileNotFoundError:
        raise CacheError(f"{path}: missing (`python -m features` rebuilds the cache)") from None
    except (OSError, ValueError) as err:
        raise CacheError(f"{path}: unreadable ({_one_line(err)}); `python -m features` rebuilds the cache") from None
    expected = manifest.get("small_files", {}).get("files.txt")
    if expected is not None and f"crc32:{zlib.crc32(data):08x}" != expected:
        raise _damaged(path)
    return files


def open_cache(cache_dir) -> Cache:
    """Open a cache folder written by ``ensure_features``, checking its manifest, rows and labels.

    Every array's shape and dtype is checked against the manifest, and its checksum where the
    manifest records one (caches written by ``ensure_features`` always do), when ``Cache.array``
    maps it.

    Raises
    ------
    CacheError
        One line naming the file that is missing, inconsistent or damaged.
    """
    root = Path(cache_dir)
    manifest = read_manifest(root)
    try:
        classes, labels_meta = manifest["classes"], manifest["arrays"]["labels"]
    except (KeyError, TypeError):
        raise CacheError(f"{root / 'manifest.json'}: no classes or labels entry; "
                         f"`python -m features` rebuilds it") from None
    files = _read_files(root / "files.txt", manifest)
    labels = np.array(_load_array(root / "labels.npy", labels_meta))
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


def fingerprint(name: str, config: FeatureConfig, rows: str, classes, embedder=None) -> str:
    """Fingerprint of array ``name``: the rows plus exactly what decides its values.

    Parameters
    ----------
    name : str
        From ``known_arrays(embedder)``.
    config : FeatureConfig
    rows : str
        ``rows_fingerprint`` of the cache.
    classes : sequence of str
        The class names (they decide ``labels``).
    embedder : features.backbone.Embedder or str, optional
        The network of an embedding array (or its ``identity``); ignored for the other arrays.

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
    if name not in known_arrays():  # an embedding: its input code, and the network
        inputs.update(backbone=backbone.VERSION, mel=mel.VERSION,
                      network=getattr(embedder, "identity", embedder))
    return _hash(inputs)


def verify_cache(cache_dir) -> list:
    """Every check of every file of a cache folder, all arrays' checksums included.

    Returns
    -------
    list of str
        One line per problem; empty when the cache is sound.

    Raises
    ------
    CacheError
        There is no cache (no ``manifest.json``) in ``cache_dir``.
    """
    root = Path(cache_dir)
    if not (root / "manifest.json").is_file():
        raise CacheError(f"{root / 'manifest.json'}: missing, no feature cache here (`python -m features` builds it)")
    try:
        c = open_cache(root)
    except CacheError as err:
        return [str(err)]
    problems = [] if "checksum" in c.manifest else [
        f"{root / 'manifest.json'}: records no checksums (an older build); `python -m features` rebuilds it"]
    # labels.npy: open_cache checked it
    return problems + [p for n in c.manifest["arrays"] if n != "labels" and (p := _array_problem(c, n))]


def code_fingerprint(name: str, config: FeatureConfig, embedder=None) -> str:
    """Fingerprint of array ``name`` without its rows: the settings and code versions alone (and the
    network of an embedding), the same for any data. A run records it for its model's input;
    ``predict.py`` refuses a run whose value differs from this code's."""
    return fingerprint(name, config, rows="", classes=(), embedder=embedder)


def feature_record(view: str, manifest: dict) -> dict:
    """What turns audio into a model's input, as a run records it for ``predict.py``.

    Parameters
    ----------
    view : str
        The array the model reads (``"img400"``, ``"mel_db"``, ``"musicnn"``, ...).
    manifest : dict
        The manifest of the cache it was trained from.

    Returns
    -------
    dict
        The cache's ``FeatureConfig`` fields, then ``view``, ``wave_scale`` (the factor of the cached
        waveform's values), ``fingerprint`` (``code_fingerprint`` of ``view``: the code versions and
        settings, no rows) and, for an embedding, ``network`` (its identity).
    """
    config = FeatureConfig(**manifest["config"])
    network = manifest["arrays"].get(view, {}).get("network")  # an embedding's network, else None
    return {**manifest["config"], "view": view, "wave_scale": manifest["wave"]["scale"],
            "fingerprint": code_fingerprint(view, config, network), **({"network": network} if network else {})}


def record_problem(record: dict, network=None):
    """Why this code cannot compute the features a run recorded (``feature_record``); None when it can.

    Parameters
    ----------
    record : dict
        A run's feature record.
    network : str, optional
        The identity of the embedder this code would use (``Embedder.identity``), for a record of an
        embedding; None for the other views.

    Returns
    -------
    str or None
        ``"trained on features this code no longer computes (fingerprint <recorded>, now <current>)"``
        (``current`` None when the record holds settings this code does not know), or None.
    """
    recorded = record.get("fingerprint")
    try:
        current = code_fingerprint(record.get("view"), config_from_record(record), network)
    except TypeError:  # settings this code does not know
        current = None
    if recorded == current:
        return None
    return f"trained on features this code no longer computes (fingerprint {recorded}, now {current})"


def data_name(root: Path) -> str:
    """Name of a dataset folder for cache and run paths: the archive's own folders read as ``gtzan``."""
    root = Path(root).resolve()
    return "gtzan" if root.name in ("genres", "genres_original") else root.name


def _note(line: str) -> None:
    print(line, file=sys.stderr)


def stale_arrays(cache_dir, names, config: FeatureConfig, tracks, classes, note=_note, embedder=None):
    """What ``cache_dir`` lacks for ``names``: None when it must be rebuilt whole (no cache, rows not
    current, or manifest, ``files.txt`` or ``labels.npy`` failing a check), else the tuple of arrays
    that are missing, stale or fail a check (empty: the cache is current).

    Each failed check is reported through ``note`` (one line naming the file) before it is rebuilt.
    """
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return None
    try:
        c = open_cache(cache_dir)
        if "checksum" not in c.manifest:
            raise CacheError(f"{cache_dir / 'manifest.json'}: written without checksums (an older build)")
    except CacheError as err:
        note(f"note: {err}; rebuilding the cache")
        return None
    rows = c.manifest["rows_fingerprint"]
    if rows != rows_fingerprint(config, data_identity(tracks)):
        return None
    stale = []
    for n in names:
        if c.manifest["arrays"].get(n, {}).get("fingerprint") != fingerprint(n, config, rows, classes, embedder):
            stale.append(n)
        elif problem := _array_problem(c, n):
            note(f"note: {problem}")
            stale.append(n)
    return tuple(stale)


def _array_problem(c: Cache, name: str):
    """Why array ``name`` of ``c`` fails its checks (one line), None when it passes."""
    try:
        c.array(name)
    except CacheError as err:
        return str(err)
    return None


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


def _shapes(config: FeatureConfig, wave_dtype, embedder=None) -> dict:
    """name -> (row shape, dtype) of every known array."""
    n_samples = config.n_samples
    out = {"labels": ((), np.int64), "lengths": ((), np.int64), "wave": ((n_samples,), wave_dtype),
           "mel_db": ((config.n_mels, mel.n_frames(n_samples, config.n_fft, config.hop_length)), np.float32)}
    out.update({f"img{v}": ((h, w, 3), np.uint8) for v, (w, h) in images.VIEWS.items()})
    if embedder:
        out[embedder.name] = ((int(backbone.n_patches(n_samples, config.sr)), embedder.n_features), np.float32)
    return out


class _Pass(NamedTuple):
    status: list  # per input track: {"relpath", "status", "note"}
    kept: list  # the tracks that became rows
    timings: dict


class _Plan(NamedTuple):
    """What one pass computes, and from what."""

    config: FeatureConfig
    wave_dtype: type  # np.int16 or np.float32: how the files decode (``clips.decode``)
    embedder: object  # features.backbone.Embedder, or None
    mel_source: np.ndarray  # a current cached mel, row-aligned with the tracks, or None
    views: tuple  # image views to make
    mel: bool  # compute the dB mel (else the views come from ``mel_source``)
    width: int  # patches per row of the embedding; None: no embedding
    decode: bool  # decode the files (else only labels, and views from ``mel_source``)


def _plan(names, config, wave_dtype, mel_source, embedder) -> _Plan:
    """Decode only when a waveform, a length, a mel or an embedding must be computed."""
    views = tuple(view_name(n) for n in names if view_name(n))
    need_mel = "mel_db" in names or bool(views and mel_source is None)
    embed = embedder is not None and embedder.name in names
    width = _shapes(config, wave_dtype, embedder)[embedder.name][0][0] if embed else None  # patches per row
    return _Plan(config, wave_dtype, embedder, mel_source, views, need_mel, width,
                 bool(need_mel or embed or {"wave", "lengths"} & set(names)))


def _decode_chunk(chunk, plan: _Plan, pool, status: list, bar) -> list:
    """(track, window, length) of each track of ``chunk`` that becomes a row (window and length None
    when nothing is decoded); appends each track's status to ``status``, its warning to ``bar``."""
    loaded = (pool.map(lambda t: decode(t, plan.config, plan.wave_dtype), chunk) if plan.decode
              else [(None, None, "ok")] * len(chunk))
    good = []
    for track, (y, n, note) in zip(chunk, loaded):
        ok = y is not None or not plan.decode
        status.append({"relpath": track.relpath, "status": "ok" if ok else "skipped", "note": note})
        if ok:
            good.append((track, y, n))
        if note != "ok":
            bar.write(f"warning: {'' if ok else 'skipped '}{note}", file=sys.stderr)
    return good


def _chunk_values(good: list, rows: slice, plan: _Plan, pool, timings: dict) -> dict:
    """Array name -> values of the rows ``rows`` (the tracks ``good``), computed by ``features.clips``
    as ``predict.py`` computes a file's; adds the seconds of each step to ``timings``."""
    t1 = time.perf_counter()
    out = {"labels": np.array([t.label for t, _, _ in good], np.int64)}
    if plan.decode:
        wave = np.stack([y for _, y, _ in good])
        out.update(wave=wave, lengths=np.array([n for _, _, n in good], np.int64))
    if plan.mel or plan.width:  # int16 k -> k / 32768, exactly as audio.load() decodes 16-bit PCM
        y = wave * np.float32(2.0 ** -15) if plan.wave_dtype == np.int16 else wave
    if plan.mel:
        S = out["mel_db"] = mel_db_of(y, plan.config)
    elif plan.views:
        S = plan.mel_source[rows]
    t2 = time.perf_counter()
    if plan.views:
        made = list(pool.map(lambda s: views_of(s, plan.views, plan.config), S))
        out.update({f"img{v}": np.stack([m[v] for m in made]) for v in plan.views})
    t3 = time.perf_counter()
    if plan.width:
        out[plan.embedder.name] = embed_clips(plan.embedder, y, out["lengths"], plan.config.sr, plan.width)
    timings["mel"] += t2 - t1
    timings["images"] += t3 - t2
    timings["embed"] += time.perf_counter() - t3
    return out


def _compute(tracks, names, config, wave_dtype, write, mel_source, jobs, progress, label, embedder=None) -> _Pass:
    """One pass over ``tracks`` computing the arrays ``names``; ``write(rows, {name: values})`` stores them.

    Image views come from ``mel_source`` (a current cached mel, row-aligned with ``tracks``) when it is
    given and the mel itself is not to be computed.
    """
    from tqdm import tqdm

    plan = _plan(names, config, wave_dtype, mel_source, embedder)
    status, kept = [], []
    timings = dict.fromkeys(("decode", "mel", "images", "embed", "write"), 0.0)
    bar = tqdm(total=len(tracks), unit="clip", desc=f"features {label}", disable=not progress,
               file=sys.stderr)
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for start in range(0, len(tracks), CHUNK):
            chunk = tracks[start:start + CHUNK]
            t0 = time.perf_counter()
            good = _decode_chunk(chunk, plan, pool, status, bar)
            timings["decode"] += time.perf_counter() - t0
            if good:
                rows = slice(len(kept), len(kept) + len(good))
                out = _chunk_values(good, rows, plan, pool, timings)
                t4 = time.perf_counter()
                write(rows, {n: out[n] for n in names})
                kept.extend(t for t, _, _ in good)
                timings["write"] += time.perf_counter() - t4
            bar.update(len(chunk))
    bar.close()
    return _Pass(status, kept, timings)


def _new_npy(path: Path, dtype, shape) -> np.memmap:
    """A new ``.npy`` memmap with its disk blocks reserved: a full disk raises ENOSPC here rather
    than a SIGBUS when a page of the memmap is written."""
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    if hasattr(os, "posix_fallocate"):  # not on macOS, whose memmaps then fail late on a full disk
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    return arr


def _open_outputs(folder: Path, names, n_rows: int, shapes: dict, suffix: str) -> dict:
    return {n: _new_npy(folder / f"{n}.npy{suffix}", shapes[n][1], (n_rows,) + shapes[n][0]) for n in names}


def _array_entries(manifest, checksums: dict, config, shapes, n_rows, embedder=None):
    rows = manifest["rows_fingerprint"]
    for n, crc in checksums.items():
        manifest["arrays"][n] = {"fingerprint": fingerprint(n, config, rows, manifest["classes"], embedder),
                                 "dtype": np.dtype(shapes[n][1]).name, "shape": [n_rows, *shapes[n][0]],
                                 "checksum": crc}
        if embedder and n == embedder.name:  # runs record it, so predict.py can check its network
            manifest["arrays"][n]["network"] = embedder.identity


def _write_manifest(folder: Path, manifest: dict) -> None:
    write_json(folder / "manifest.json", {**manifest, "checksum": _manifest_checksum(manifest)})


def _writer(out: dict):
    """``write(rows, values)`` for ``_compute``: store each array's rows in its memmap."""
    def write(rows, values):
        for n, v in values.items():
            out[n][rows] = v
            kill_point(f"{n}.npy@chunk")
    return write


def _finish(out: dict, n_kept: int) -> dict:
    """Flush and close the memmaps in ``out``, cut to their first ``n_kept`` rows when files were
    skipped; returns each array's ``checksum``."""
    checksums = {}
    for name, arr in list(out.items()):
        arr.flush()
        path = Path(arr.filename)
        if n_kept < len(arr):  # rare (undecodable files): rewrite at the final length
            cut = temp_name(path)
            small = _new_npy(cut, arr.dtype, (n_kept,) + arr.shape[1:])
            for i in range(0, n_kept, CHUNK):
                small[i:i + CHUNK] = arr[i:min(i + CHUNK, n_kept)]
            small.flush()
            del small
            os.replace(cut, path)
        del out[name], arr
        checksums[name] = checksum(path)
    return checksums


def build_cache(root, cache_dir, config: FeatureConfig = FeatureConfig(), jobs: int = None,
                progress: bool = True, arrays=DEFAULT_ARRAYS, embedder=None) -> Path:
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
    embedder : features.backbone.Embedder, optional
        The network of an embedding array in ``arrays``.

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
    identity = data_identity(tracks)  # before decoding: a file edited meanwhile makes the next run rebuild
    jobs = _set_threads(jobs)
    names = _with_rows(arrays, embedder)
    wave_dtype = np.int16 if config.sr == audio.SR and _all_pcm16(tracks, config.sr) else np.float32
    shapes = _shapes(config, wave_dtype, embedder)
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(cache_dir, "partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        out = _open_outputs(tmp, names, len(tracks), shapes, "")
        done = _compute(tracks, names, config, wave_dtype, _writer(out), None, jobs, progress, cache_dir.name,
                        embedder)
        if not done.kept:
            raise dataset.DataError(f"{root}: none of the {len(tracks)} audio files is usable")
        t0 = time.perf_counter()
        checksums = _finish(out, len(done.kept))
        files = "".join(t.relpath + "\n" for t in done.kept).encode()
        (tmp / "files.txt").write_bytes(files)
        done.timings["write"] += time.perf_counter() - t0
        manifest = {
            "format": FORMAT, "data_name": cache_dir.name, "data_root": str(root.resolve()),
            "data_identity": identity,
            "rows_fingerprint": rows_fingerprint(config, identity),
            "classes": list(classes), "n": len(done.kept), "n_skipped": len(tracks) - len(done.kept),
            "config": dataclasses.asdict(config),
            "wave": {"dtype": np.dtype(wave_dtype).name, "scale": 2.0 ** -15 if wave_dtype == np.int16 else 1.0},
            "arrays": {}, "small_files": {"files.txt": f"crc32:{zlib.crc32(files):08x}"},
            "versions": versions(numpy="numpy", scipy="scipy", numba="numba", soundfile="soundfile", pillow="PIL"),
            "threads": jobs,
            "timings": {k: round(v, 3) for k, v in done.timings.items()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": done.status,
        }
        _array_entries(manifest, checksums, config, shapes, len(done.kept), embedder)
        _write_manifest(tmp, manifest)
        replace_folder(cache_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache_dir


def add_arrays(root, cache_dir, names, config: FeatureConfig = FeatureConfig(), jobs: int = None,
               progress: bool = True, embedder=None) -> Path:
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
    shapes = _shapes(config, wave_dtype, embedder)
    manifest = {**c.manifest, "classes": list(dataset.classes(root)), "arrays": dict(c.manifest["arrays"])}
    rows = manifest["rows_fingerprint"]
    mel_source = None
    if ("mel_db" not in names and any(view_name(n) for n in names)
            and manifest["arrays"].get("mel_db", {}).get("fingerprint")
            == fingerprint("mel_db", config, rows, manifest["classes"])):
        mel_source = c.array("mel_db")  # current: the views need no decoding
    suffix = f".partial-{os.getpid()}"
    try:
        out = _open_outputs(cache_dir, names, len(tracks), shapes, suffix)
        done = _compute(tracks, names, config, wave_dtype, _writer(out), mel_source, jobs, progress,
                        cache_dir.name, embedder)
        if len(done.kept) != len(tracks):
            raise CacheError(f"{cache_dir}: a file of the cache no longer decodes; rebuilding it whole")
        checksums = _finish(out, len(tracks))
        for n in names:  # a kill from here until the manifest is written: their checksums catch it
            kill_point(f"{n}.npy@rename")
            os.replace(cache_dir / f"{n}.npy{suffix}", cache_dir / f"{n}.npy")
        _array_entries(manifest, checksums, config, shapes, len(tracks), embedder)
        manifest["timings"] = {k: round(v, 3) for k, v in done.timings.items()}
        _write_manifest(cache_dir, manifest)
    finally:
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


def _with_rows(arrays, embedder=None) -> tuple:
    names = tuple(dict.fromkeys(("labels", "lengths") + tuple(arrays)))
    unknown = [n for n in names if n not in known_arrays(embedder)]
    if unknown:
        raise CacheError(f"unknown cache array {unknown[0]!r}; choose from {', '.join(known_arrays(embedder))}")
    return names


def write_error(cache_dir, err: OSError) -> CacheError:
    """The one-line error for an ``OSError`` met writing ``cache_dir``: the folder and what to do."""
    where = f"; {err.filename}" if err.filename else ""
    return CacheError(f"{cache_dir}: cannot write the feature cache ({err.strerror or err}{where}); "
                      f"{write_advice(err, '--cache DIR')}")


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


def _bring_up_to_date(root, cache_dir: Path, names, force, config, jobs, progress, embedder):
    """Under the cache's lock, rebuild what is stale or damaged; returns what was (None: everything)."""
    def waiting():
        _note(f"{cache_dir.parent}: another process is building this cache; waiting for it")

    with folder_lock(cache_dir, waiting, keep_file=True) as locked:
        if locked:
            finish_replace(cache_dir)
        remove_orphans(cache_dir, locked)
        # checked only now, holding the lock: a builder we waited for has usually done the work
        tracks, classes = _tracks_and_classes(root)
        stale = None if force else stale_arrays(cache_dir, names, config, tracks, classes, embedder=embedder)
        if stale:
            try:
                add_arrays(root, cache_dir, stale, config, jobs=jobs, progress=progress, embedder=embedder)
            except CacheError as err:
                _note(f"note: {err}")
                stale = None
        if stale is None:
            build_cache(root, cache_dir, config, jobs=jobs, progress=progress, arrays=names, embedder=embedder)
    return stale


def ensure_features(data=None, cache_root="cache", force=False, config: FeatureConfig = FeatureConfig(),
                    arrays=DEFAULT_ARRAYS, synthetic=20, jobs=None, progress=True, log=None, embedder=None) -> Path:
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
    embedder : features.backbone.Embedder, optional
        The network of an embedding array in ``arrays`` (``models.musicnn.embedder()``).

    Raises
    ------
    dataset.DataError
        Named data unusable, no data (``synthetic`` None), one class, or no file decodes.
    CacheError
        Unknown array names, or the cache cannot be written (disk full, read-only, no permission):
        one line naming the folder and what to do.
    """
    root = locate_data(data, synthetic)
    cache_dir = Path(cache_root) / data_name(root)
    names = _with_rows(arrays, embedder)
    try:
        stale = _bring_up_to_date(root, cache_dir, names, force, config, jobs, progress, embedder)
    except OSError as err:  # the builders have removed their temporary files; the old cache is intact
        raise write_error(cache_dir, err) from None
    if log:
        log(f"{cache_dir}: " + ("current, nothing rebuilt" if stale == () else
                                "built " + ", ".join(names if stale is None else stale)))
    return cache_dir
