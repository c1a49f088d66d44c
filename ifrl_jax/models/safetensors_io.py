"""Minimal safetensors reading (memory-mapped, one tensor at a time) and writing, bf16 included.

The format: 8-byte little-endian header size, a JSON header {name: {dtype, shape, data_offsets}},
then the raw bytes. numpy has no bfloat16, so the `safetensors` numpy API cannot read bf16
checkpoints; `ml_dtypes` gives us the dtype and a memmap gives zero-copy access.
"""

from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np

DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in DTYPES.items()}


class SafetensorsFile:
    """Lazily readable tensors of one .safetensors file; errors name the file and tensor."""

    def __init__(self, path: str):
        self.path = path
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"{path}: truncated safetensors file ({size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if 8 + n > size:
                raise ValueError(f"{path}: header claims {n} bytes but the file has {size}")
            try:
                header = json.loads(f.read(n))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: corrupt safetensors header ({e})") from e
        self.metadata = header.pop("__metadata__", None) or {}
        self.header = header
        self._start = 8 + n
        for name, info in header.items():
            begin, end = info["data_offsets"]
            if self._start + end > size:
                raise ValueError(
                    f"{path}: tensor {name!r} ends at byte {self._start + end} but the file has "
                    f"{size} bytes (truncated checkpoint?)"
                )
            if info["dtype"] not in DTYPES:
                raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        self._mm = np.memmap(path, dtype=np.uint8, mode="r") if size else None

    def keys(self) -> list[str]:
        return list(self.header)

    def get(self, name: str) -> np.ndarray:
        """The tensor as a read-only memory-mapped numpy array (no copy)."""
        info = self.header[name]
        begin, end = info["data_offsets"]
        raw = self._mm[self._start + begin : self._start + end]
        return raw.view(DTYPES[info["dtype"]]).reshape(info["shape"])


def write(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None):
    """Writes tensors (numpy, bf16 via ml_dtypes allowed) to one .safetensors file."""
    header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for name, arr in tensors.items():
        nbytes = arr.nbytes
        header[name] = {
            "dtype": _NAMES[arr.dtype],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for arr in tensors.values():
            f.write(np.ascontiguousarray(arr).tobytes())
    os.replace(tmp, path)
