"""``python -m features download`` (``make data``): fetch, check and unpack GTZAN.

Steps, each skipped when its result is already there:

1. ``data/gtzan/`` exists and every file verifies -> nothing to do.
2. Download the archive to ``data/genres.tar.gz`` through ``data/genres.tar.gz.part``,
   resuming with an HTTP Range request (a server that ignores Range answers 200 and the
   download restarts from byte 0; redirects are followed). A cut transfer keeps the
   ``.part`` file, so the next call (or the next of ``--retries``) continues it.
3. Compare the archive's SHA-256 with the pinned one. A mismatch is reported but not fatal:
   mirrors repack archives, and what matters is the audio inside.
4. Extract (``features.dataset.extract_archive``: no absolute or ``..`` members, tarfile's
   ``filter='data'``) into a hidden staging folder and check every file's MD5 against
   ``gtzan_index.json``. Only a copy where all 1000 verify becomes ``data/gtzan/``.

Any failure (offline, HTTP error, cut transfer, unsafe archive, MD5 mismatch) prints one
line, including where to put the data by hand, and exits 1. Only urllib is used.
"""
import argparse
import http.client
import os
import re
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from features.dataset import (DEFAULT_DATA, INDEX_PATH, REPO, WHERE_TO_PUT, DataError,
                              extract_archive, find_data, load_index, resolve_root, verify)
from features.files import sha256_file

DEFAULT_URL = "https://huggingface.co/datasets/marsyas/gtzan/resolve/main/data/genres.tar.gz"
# Pinned by a public project for the Hugging Face copy; see ../shared/data/README.md.
DEFAULT_SHA256 = "b28cc067ff6199bd826f5d1a6931458586d64acae7f44b2e882b7a97af057531"
ARCHIVE_NAME = "genres.tar.gz"
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download that did not complete; ``str()`` is one line."""


class TransferCut(DownloadError):
    """The connection ended or stalled before the announced length; the ``.part`` file
    keeps what arrived, so the next attempt resumes."""


def _content_range(value):
    """``'bytes 100-199/1000'`` -> (100, 1000); total None when ``*``."""
    m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (value or "").strip())
    if m is None:
        return None, None
    return int(m[1]), None if m[2] == "*" else int(m[2])


def fetch(url, part, timeout=30.0, progress=None):
    """Download ``url`` into ``part``, continuing from the bytes ``part`` already holds.

    Parameters
    ----------
    url : str
    part : Path
        Partial file, appended to when the server answers a Range request with 206.
    timeout : float
        Seconds to wait to connect and for each read.
    progress : bool or None
        Show a tqdm bar; None shows it only on a terminal.

    Returns
    -------
    int
        Size of the complete ``part`` file in bytes.

    Raises
    ------
    TransferCut
        Connection lost or stalled mid-transfer (``part`` keeps what arrived).
    DownloadError
        Cannot connect, or an HTTP error.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "gtzan-genre/1 (urllib)"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                      timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # The .part is already as long as (or longer than) the file: start over.
            part.unlink()
            return fetch(url, part, timeout, progress)
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise DownloadError(f"{url}: cannot connect ({getattr(e, 'reason', e)})") from None
    with resp:
        start, total = _content_range(resp.headers.get("Content-Range"))
        if resp.status == 206 and start == offset:
            mode = "ab"
        else:  # 200: Range ignored (or not sent); a 206 for other bytes is unusable too
            if resp.status == 206:
                part.unlink()
                return fetch(url, part, timeout, progress)
            offset, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        received = offset
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=part.name, disable=None if progress is None else not progress)
        with open(part, mode) as f, bar:
            try:
                # read1: whatever has arrived (<= CHUNK), so a stall loses no received bytes.
                while chunk := resp.read1(CHUNK):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as e:
                raise TransferCut(f"{url}: transfer cut at {received} of {total or '?'} bytes "
                                  f"({e})") from None
    if total is not None and received < total:
        raise TransferCut(f"{url}: transfer cut at {received} of {total} bytes")
    return received


def _summary(v):
    parts = [f"{len(v.verified)} verified"]
    for name in ("mismatched", "missing", "extra", "unverifiable"):
        if getattr(v, name):
            parts.append(f"{len(getattr(v, name))} {name}")
    return ", ".join(parts)


def download(url, dest, sha256=DEFAULT_SHA256, index_path=INDEX_PATH, timeout=30.0, retries=2,
             progress=None):
    """Fetch, check and extract the archive so that ``dest/gtzan`` holds verified data.

    Parameters
    ----------
    url : str
    dest : Path
        Folder for ``genres.tar.gz`` (kept) and ``gtzan/``.
    sha256 : str
        Expected archive SHA-256 (a mismatch is reported, not fatal).
    index_path : Path
        mirdata-style index whose per-file MD5s decide.
    timeout : float
        Connect/read timeout in seconds.
    retries : int
        Extra attempts, each resuming, after a cut transfer.
    progress : bool or None
        Progress bar; None = only on a terminal.

    Returns
    -------
    Path
        The verified data root, ``dest/gtzan/genres`` for the GTZAN archive.

    Raises
    ------
    DownloadError, DataError
    """
    dest = Path(dest)
    target, archive = dest / "gtzan", dest / ARCHIVE_NAME
    part = archive.with_name(ARCHIVE_NAME + ".part")
    index = load_index(index_path)
    if target.exists():
        root = resolve_root(target)
        v = verify(root, index) if root else None
        if v is not None and v.ok:
            print(f"{root}: already present and verified ({len(v.verified)} tracks); nothing to do")
            return root
        found = _summary(v) if v else "no genre folders"
        raise DataError(f"{target}: exists but does not verify ({found}); see `python -m features "
                        f"validate {target}`, or move it away to download again")
    if archive.exists():
        print(f"{archive}: already downloaded")
    else:
        dest.mkdir(parents=True, exist_ok=True)
        for attempt in range(retries + 1):
            try:
                fetch(url, part, timeout, progress)
                break
            except TransferCut as e:
                if attempt == retries:
                    raise
                print(f"{e}; resuming ({attempt + 1}/{retries})", file=sys.stderr)
        os.replace(part, archive)
    digest = sha256_file(archive)
    if digest != sha256.lower():
        print(f"{archive}: SHA-256 {digest} is not the expected {sha256}; "
              f"the per-file MD5s decide", file=sys.stderr)
    staging = dest / ".gtzan.unverified"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        try:
            extract_archive(archive, staging)
        except DataError as e:
            raise DataError(f"{e}; delete it to download again, or {WHERE_TO_PUT}") from None
        root = resolve_root(staging)
        v = verify(root, index) if root else None
        if v is None or not v.ok:
            raise DataError(f"{archive}: extracted files do not verify "
                            f"({_summary(v) if v else 'no genre folders'}); delete it to download "
                            f"again, or {WHERE_TO_PUT}")
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    root = resolve_root(target)
    print(f"{root}: {len(v.verified)} tracks verified by MD5 (archive kept at {archive})")
    return root


def download_main(argv=None):
    """``python -m features download``: returns the exit code (0 data verified, 1 failure)."""
    parser = argparse.ArgumentParser(
        prog="python -m features download",
        description="Download GTZAN (genres.tar.gz, ~1.2 GB), check it and extract it to "
                    "DEST/gtzan/. Resumes an interrupted download. The data is accepted only "
                    "when every file's MD5 matches the index.",
        epilog="Exit status: 0 data present and verified (or, with --if-missing, found); 1 download, "
               "checksum or extraction failed (the message says where to put the data by hand); "
               "2 bad arguments or named data that is unusable.")
    parser.add_argument("--url", default=os.environ.get("GTZAN_URL") or DEFAULT_URL,
                        help="archive URL (default: $GTZAN_URL, else %(default)s)")
    parser.add_argument("--dest", type=Path, default=REPO / "data",
                        help="folder for genres.tar.gz and gtzan/ (default: %(default)s)")
    parser.add_argument("--sha256", default=DEFAULT_SHA256, help="expected archive SHA-256")
    parser.add_argument("--index", type=Path, default=INDEX_PATH,
                        help="mirdata-style per-file MD5 index (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait to connect and per read (default: %(default)s)")
    parser.add_argument("--retries", type=int, default=2,
                        help="resume attempts after a cut transfer (default: %(default)s)")
    parser.add_argument("--if-missing", action="store_true",
                        help="first look for the data as every command does (--data, $GTZAN_DIR, "
                             "data/gtzan/, data/genres.tar.gz) and download only when none is found")
    parser.add_argument("--data", help="with --if-missing: the data the user named (an error if unusable)")
    args = parser.parse_args(argv)
    if args.if_missing:
        try:
            found = find_data(args.data)
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if found is not None:
            print(f"using the data at {found}; nothing to download")
            return 0
        print(f"no GTZAN data found; downloading {ARCHIVE_NAME} (about 1.2 GB) from {args.url}")
    try:
        root = download(args.url, args.dest, args.sha256, args.index, args.timeout, args.retries)
    except TransferCut as e:
        print(f"{e}; run again to resume from {args.dest / (ARCHIVE_NAME + '.part')}",
              file=sys.stderr)
        return 1
    except DownloadError as e:
        print(f"{e}; download genres.tar.gz by hand and {WHERE_TO_PUT}", file=sys.stderr)
        return 1
    except DataError as e:
        print(e, file=sys.stderr)
        return 1
    if (args.dest / "gtzan").resolve() != DEFAULT_DATA:
        print(f"use it with --data {root} or GTZAN_DIR={root}")
    return 0
