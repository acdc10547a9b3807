"""A reader of TensorFlow's tensor-bundle checkpoints (``<prefix>.index``, ``<prefix>.data-*``) without TensorFlow.

The layout, as TensorFlow's ``tensorflow/core/util/tensor_bundle`` writes it::

    <prefix>.index                  a LevelDB-format table (SSTable), keys sorted, values protobuf:
        footer (last 48 bytes)      metaindex and index BlockHandles (varint offset, varint size),
                                    zero padding, magic 0xdb4775248b80fb57 (little-endian fixed64)
        block                       entries [shared, unshared, value length (varints), key suffix,
                                    value], restart offsets (uint32), their count (uint32); then a
                                    trailer: compression byte (0, none) + masked crc32c of both
        index block                 key -> BlockHandle of the data block holding it
        key ""                      BundleHeaderProto: num_shards=1, endianness=2 (0 = little)
        key <tensor name>           BundleEntryProto: dtype=1, shape=2, shard_id=3, offset=4,
                                    size=5, crc32c=6 (masked), slices=7
    <prefix>.data-SSSSS-of-NNNNN    the tensors' raw little-endian bytes, one file per shard

Every block's and every tensor's checksum is verified; anything wrong in either file is a
`BundleError` with a one-line message naming the file. Partitioned (sliced) variables, big-endian
bundles and non-numeric dtypes (strings, resources, variants, quantised, bfloat16) are refused.
"""

import struct
from pathlib import Path

import numpy as np
from numba import njit

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_BYTES = 48
TRAILER_BYTES = 5  # compression type + masked crc32c
_CRC_MASK_DELTA = 0xA282EAD8

# tensorflow/core/framework/types.proto: the numeric dtypes whose bytes numpy reads as they are
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
          8: np.complex64, 9: np.int64, 10: np.bool_, 17: np.uint16, 18: np.complex128,
          19: np.float16, 22: np.uint32, 23: np.uint64}


class BundleError(ValueError):
    """A checkpoint file that cannot be read; the message is one line naming the file."""


def _crc_table() -> np.ndarray:
    """The 256-entry table of the reflected Castagnoli polynomial 0x82F63B78."""
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1).astype(np.uint32)
    return table


_CRC_TABLE = _crc_table()


@njit(cache=True, nogil=True)
def _crc32c_update(crc, data, table):
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def masked_crc32c(data) -> int:
    """LevelDB's masked crc32c of ``data`` (bytes-like): the crc rotated right 15 bits plus a constant.

    The mask keeps a crc of data that itself holds crcs from being trivially related to them.
    """
    raw = np.frombuffer(data, dtype=np.uint8)
    crc = int(_crc32c_update(np.uint32(0xFFFFFFFF), raw, _CRC_TABLE)) ^ 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def _varint(buf, pos: int):
    """(value, next position) of the base-128 varint at ``buf[pos]``; IndexError past the end."""
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(buf) -> dict:
    """A protobuf message's fields, ``{number: [values]}``: ints for varint / fixed, bytes otherwise."""
    fields, pos = {}, 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, pos = int.from_bytes(buf[pos:pos + width], "little"), pos + width
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = bytes(buf[pos:pos + length]), pos + length
        else:
            raise ValueError(f"protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("protobuf message cut short")
        fields.setdefault(number, []).append(value)
    return fields


def _block(table: bytes, handle: bytes) -> list:
    """The (key, value) entries of the block a BlockHandle points at, its checksum verified."""
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    if offset + size + TRAILER_BYTES > len(table) - FOOTER_BYTES or size < 4:
        raise ValueError(f"block at {offset} (+{size} bytes) outside the table")
    contents = table[offset:offset + size]
    kind, crc = struct.unpack_from("<BI", table, offset + size)
    if masked_crc32c(table[offset:offset + size + 1]) != crc:
        raise ValueError(f"checksum mismatch in the block at byte {offset}")
    if kind != 0:
        raise ValueError(f"block at {offset} is compressed (type {kind}); only uncompressed is supported")
    n_restarts = struct.unpack_from("<I", contents, size - 4)[0]
    end = size - 4 - 4 * n_restarts
    if end < 0:
        raise ValueError(f"block at {offset} claims {n_restarts} restart points")
    entries, key, pos = [], b"", 0
    while pos < end:
        shared, pos = _varint(contents, pos)
        unshared, pos = _varint(contents, pos)
        length, pos = _varint(contents, pos)
        if shared > len(key) or pos + unshared + length > end:
            raise ValueError(f"malformed entry in the block at {offset}")
        key = key[:shared] + contents[pos:pos + unshared]
        value = contents[pos + unshared:pos + unshared + length]
        entries.append((key, value))
        pos += unshared + length
    return entries


def _table(path: Path) -> list:
    """Every (key, value) of the SSTable at ``path``, in key order; ValueError when damaged."""
    table = path.read_bytes()
    if len(table) < FOOTER_BYTES or struct.unpack_from("<Q", table, len(table) - 8)[0] != TABLE_MAGIC:
        raise ValueError("not a table (no magic number at the end: truncated or another format)")
    footer = table[-FOOTER_BYTES:]
    index_at = _varint(footer, _varint(footer, 0)[1])[1]  # after the metaindex handle
    _block(table, footer)  # the metaindex: TensorFlow writes no filters there, but its crc is checked too
    entries = [kv for _, handle in _block(table, footer[index_at:]) for kv in _block(table, handle)]
    if any(a[0] >= b[0] for a, b in zip(entries, entries[1:])):
        raise ValueError("keys out of order")
    return entries


def _header(value: bytes) -> int:
    """The shard count from the BundleHeaderProto, after checking it describes a readable bundle."""
    header = _fields(value)
    if header.get(2, [0])[0] != 0:
        raise ValueError("big-endian bundle; only little-endian is supported")
    return header.get(1, [1])[0]


def _entry(name: str, value: bytes) -> dict:
    """A BundleEntryProto as {dtype, shape, shard, offset, size, crc}."""
    fields = _fields(value)
    if 7 in fields:
        raise ValueError(f"tensor {name!r} is partitioned (slices); not supported")
    dtype = fields.get(1, [0])[0]
    if dtype not in DTYPES:
        raise ValueError(f"tensor {name!r} has TensorFlow dtype {dtype}; not supported")
    dims = [_fields(dim).get(1, [0])[0] for dim in _fields(fields.get(2, [b""])[0]).get(2, [])]
    return {"dtype": np.dtype(DTYPES[dtype]).newbyteorder("<"), "shape": tuple(dims),
            "shard": fields.get(3, [0])[0], "offset": fields.get(4, [0])[0], "size": fields.get(5, [0])[0],
            "crc": fields.get(6, [0])[0]}


def bundle_file(prefix, suffix: str) -> Path:
    """``<prefix><suffix>``; a prefix naming a folder stands for TensorFlow's ``<folder>/``."""
    return Path(prefix) / suffix if Path(prefix).is_dir() else Path(f"{prefix}{suffix}")


def read_index(prefix) -> tuple:
    """Parse ``<prefix>.index``.

    Parameters
    ----------
    prefix : str or Path
        The bundle's file prefix, e.g. ``.../MSD_musicnn/`` for ``.../MSD_musicnn/.index``; a folder
        (``.../MSD_musicnn``, with or without the slash) stands for the files inside it.

    Returns
    -------
    n_shards : int
    entries : dict
        ``{tensor name: {"dtype": np.dtype, "shape": tuple, "shard": int, "offset": int (bytes),
        "size": int (bytes), "crc": int (masked crc32c)}}``, in key order.

    Raises
    ------
    BundleError
        Missing, damaged or unsupported index (one line, naming the file).
    """
    path = bundle_file(prefix, ".index")
    try:
        entries = _table(path)
        if not entries or entries[0][0] != b"":
            raise ValueError("no bundle header (the entry with the empty key)")
        n_shards = _header(entries[0][1])
        return n_shards, {key.decode(): _entry(key.decode(), value) for key, value in entries[1:]}
    except OSError as e:
        raise BundleError(f"{path}: {e.strerror}") from None
    except (ValueError, IndexError, UnicodeDecodeError, struct.error) as e:
        raise BundleError(f"{path}: {e}") from None


def read_bundle(prefix) -> dict:
    """Every tensor of a tensor-bundle checkpoint, checksums verified.

    Parameters
    ----------
    prefix : str or Path
        The bundle's file prefix: files ``<prefix>.index`` and ``<prefix>.data-00000-of-00001``
        (one data file per shard); a folder stands for the files inside it (see `read_index`). The
        ``checkpoint`` file beside them is not read: it names the writer's paths.

    Returns
    -------
    dict
        ``{name: np.ndarray}`` in the checkpoint's dtype and shape (native byte order, writable).

    Raises
    ------
    BundleError
        A missing, damaged or unsupported file (one line, naming it).
    """
    n_shards, entries = read_index(prefix)
    shards, tensors = {}, {}
    for name, e in entries.items():
        path = bundle_file(prefix, f".data-{e['shard']:05d}-of-{n_shards:05d}")
        try:
            if path not in shards:
                shards[path] = path.read_bytes()
            tensors[name] = _tensor(shards[path], name, e)
        except OSError as err:
            raise BundleError(f"{path}: {err.strerror}") from None
        except ValueError as err:
            raise BundleError(f"{path}: {err}") from None
    return tensors


def _tensor(data: bytes, name: str, e: dict) -> np.ndarray:
    """One tensor cut out of a data shard's bytes, after checking its size and checksum."""
    if e["size"] != int(np.prod(e["shape"], dtype=np.int64)) * e["dtype"].itemsize:
        raise ValueError(f"tensor {name!r}: {e['size']} bytes do not fit shape {e['shape']} of {e['dtype']}")
    raw = data[e["offset"]:e["offset"] + e["size"]]
    if len(raw) != e["size"]:
        raise ValueError(f"tensor {name!r} ends past the end of the file (truncated?)")
    if masked_crc32c(raw) != e["crc"]:
        raise ValueError(f"checksum mismatch in tensor {name!r}")
    return np.frombuffer(raw, dtype=e["dtype"]).reshape(e["shape"]).astype(e["dtype"].newbyteorder("="))
