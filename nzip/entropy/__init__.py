"""The shared entropy layer: integer probability models and the lane-interleaved rANS coder.

    blob = nzip.entropy.encode(symbols)            # table built from the data, travels in the blob
    symbols = nzip.entropy.decode(blob)
    tables = nzip.entropy.IndexedTables.gaussian() # indexed family (compressai's layout)
    blob = nzip.entropy.encode_indexed(values, indexes, tables)
    values = nzip.entropy.decode_indexed(blob, indexes, tables)
    blob = nzip.entropy.encode_context(symbols, contexts, num_contexts)  # a data-built table per context
    symbols = nzip.entropy.decode_context(blob, contexts)

``nzip.entropy.constriction_backend`` wraps constriction's ANS stack and range queue for
symbol-by-symbol models; it is also the reference the lane coder is tested against.
"""
from .coder import decode, decode_context, decode_indexed, encode, encode_context, encode_indexed
from .tables import (
    IndexedTables,
    cross_entropy_bits,
    default_scale_grid,
    empirical_entropy_bits,
    quantize_counts,
)

__all__ = [
    "encode", "decode", "encode_indexed", "decode_indexed", "encode_context", "decode_context", "IndexedTables", "quantize_counts",
    "cross_entropy_bits", "empirical_entropy_bits", "default_scale_grid",
]
