"""nzip: compress the data of machine learning into chunked, random-access zarr containers.

    nzip.encode("dem.npy", "dem.nz")          # codec chosen from the input
    arr = nzip.decode("dem.nz")               # or nzip.decode("dem.nz", "out.npy")
    item = nzip.open("dem.nz"); item.read("symbols", (slice(0, 10),))
    nzip.encode("model.safetensors", "model.nz"); sd = nzip.weights.load("model.nz")
    nzip.encode("emb.npy", "emb.nz", codec="embedding/opq", bytes=16); ids, scores = nzip.search("emb.nz", q, k=10)
"""
from . import formats as _formats  # noqa: F401 - registers the zarr codec nzip.rans
from . import codecs  # noqa: F401 - the built-in codecs register on import
from . import weights  # noqa: F401 - nzip.weights.load: lazy state dicts
from .api import Report, decode, encode, info, list_codecs, open
from .search import open_index, search
from .errors import (
    CorruptDataError,
    InvalidInputError,
    NzipError,
    OutputExistsError,
    UnknownCodecError,
    UnsupportedFormatError,
)

__version__ = "0.1.0"
__all__ = [
    "encode", "decode", "open", "info", "list_codecs", "search", "open_index", "codecs", "weights", "Report", "NzipError", "InvalidInputError",
    "CorruptDataError", "UnsupportedFormatError", "UnknownCodecError", "OutputExistsError",
]
