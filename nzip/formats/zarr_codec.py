"""``nzip.rans``: the zarr v3 array-to-bytes codec that entropy codes integer chunks.

Registered under zarr's ``zarr.codecs`` entry point (and when nzip first uses zarr), so a plain
``zarr.open`` reads nzip symbol arrays once nzip is installed. Each chunk is one self-contained
blob: narrow-range chunks are one lane-rANS blob with the chunk's own table; chunks whose values span
more than 2**16 integers are split into byte planes of (value - min), each coded on its own.

Chunk layout: see :mod:`.rans_chunk`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.registry import register_codec

from .rans_chunk import PLANE_THRESHOLD, PLANES, SINGLE, decode_chunk, encode_chunk  # noqa: F401 - re-exported

NAME = "nzip.rans"


@dataclass(frozen=True)
class RansCodec(ArrayBytesCodec):
    """zarr v3 codec ``nzip.rans`` (no configuration)."""

    is_fixed_size = False

    @classmethod
    def from_dict(cls, data):  # noqa: ANN001 - zarr's signature
        return cls()

    def to_dict(self):
        return {"name": NAME}

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        dtype = chunk_spec.dtype.to_native_dtype()
        size = int(np.prod(chunk_spec.shape))
        out = decode_chunk(chunk_bytes.as_numpy_array().tobytes(), dtype, size)
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(out.reshape(chunk_spec.shape))

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        blob = encode_chunk(np.asarray(chunk_array.as_ndarray_like()))
        return chunk_spec.prototype.buffer.from_bytes(blob)

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        raise NotImplementedError("nzip.rans output size depends on the data")


register_codec(NAME, RansCodec)
