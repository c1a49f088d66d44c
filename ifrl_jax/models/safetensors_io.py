"""Minimal safetensors reading (memory-mapped, one tensor at a time) and writing, bf16 included.

The format: 8-byte little-endian header size, a JSON header {name: {dtype, shape, data_offsets}},
then the raw bytes. numpy has no bfloat16, so the `safetensors` numpy API cannot read bf16
checkpoints; `ml_dtypes` gives us the dtype and a memmap gives zero-copy access. `Writer` streams:
the header comes from (name, dtype, shape) alone, then each tensor's bytes are written as it
arrives, so the writer never holds more than the tensor it is given.
"""

from __future__ import annotations

import json
import math
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


class Writer:
    """Writes one .safetensors file tensor by tensor, in the order its header lists them.

    Use as a context manager: `Writer(path, specs)` writes the header (specs: (name, dtype,
    shape) in file order) to `path + ".tmp"`; `add(name, array)` appends one tensor's bytes; a
    clean exit renames the file to `path` once every tensor is written, an exception removes it.
    """

    def __init__(self, path: str, specs, metadata: dict[str, str] | None = None):
        header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
        offset = 0
        self._specs = []
        for name, dtype, shape in specs:
            dtype, shape = np.dtype(dtype), [int(n) for n in shape]
            nbytes = math.prod(shape) * dtype.itemsize
            header[name] = {
                "dtype": _NAMES[dtype],
                "shape": shape,
                "data_offsets": [offset, offset + nbytes],
            }
            self._specs.append((name, dtype, tuple(shape)))
            offset += nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        self.path, self._tmp, self._next = path, path + ".tmp", 0
        self._f = open(self._tmp, "wb")
        self._f.write(struct.pack("<Q", len(blob)))
        self._f.write(blob)

    def add(self, name: str, arr: np.ndarray) -> None:
        """Appends the next tensor; its name, dtype and shape must be the header's next entry."""
        want = self._specs[self._next] if self._next < len(self._specs) else None
        if want != (name, arr.dtype, arr.shape):
            raise ValueError(
                f"{self.path}: got tensor {name!r} {arr.dtype}{list(arr.shape)}, but the header's "
                f"next entry is {want}"
            )
        self._f.write(np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data)
        self._next += 1

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._f.close()
        if exc_type is None and self._next != len(self._specs):
            os.remove(self._tmp)
            raise ValueError(
                f"{self.path}: {self._next} of {len(self._specs)} tensors written; the header "
                f"lists {self._specs[self._next][0]!r} next"
            )
        if exc_type is not None:
            os.remove(self._tmp)
            return
        os.replace(self._tmp, self.path)


def write(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None):
    """Writes tensors (numpy, bf16 via ml_dtypes allowed) to one .safetensors file."""
    specs = [(name, arr.dtype, arr.shape) for name, arr in tensors.items()]
    with Writer(path, specs, metadata) as w:
        for name, arr in tensors.items():
            w.add(name, arr)
