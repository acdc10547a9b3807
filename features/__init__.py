"""Audio, dB mel, image views, the dataset and the feature cache; plus the one atomic file writer."""

import os
import tempfile
from pathlib import Path


def atomic_write(path, write) -> None:
    """Write ``path`` through ``write(binary_file)`` into a temporary file beside it, then rename.

    Readers see the old file or the whole new one, never a half-written one; the temporary file is
    removed whether ``write`` succeeds, fails or is interrupted.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
