"""The registry: built-ins, lookups, and third-party codecs through entry points."""
from importlib.metadata import EntryPoint

import numpy as np
import pytest

import nzip
from nzip import registry
from nzip.errors import InvalidInputError, UnknownCodecError


def test_builtins():
    assert nzip.list_codecs()["array/rans"] == "array"
    assert registry.for_path("x.NPY").name == "array/rans"
    with pytest.raises(InvalidInputError, match="--codec"):
        registry.for_path("x.unknown")
    with pytest.raises(InvalidInputError, match=r"pass --codec image/vqgan \(lossy"):  # a codec that reads it
        registry.for_path("photo.JPG")
    with pytest.raises(UnknownCodecError, match="registered"):
        registry.get("nope/nope")


class Reversed(registry.Codec):
    """A toy third-party codec: stores the array reversed, raw."""

    name, modality, suffixes = "test/reversed", "array", (".rev",)

    def read(self, path):
        return np.load(path)

    def write(self, item, path, overwrite=False):
        np.save(path, item)

    def encode(self, item, progress=None, **params):
        from nzip.formats import ArraySpec
        a = np.asarray(item)[::-1].copy()
        return registry.Encoded({"data": ArraySpec(a, symbols=False)},
                                source={"modality": "array", "shape": list(a.shape), "dtype": a.dtype.str})

    def decode(self, container, progress=None, device="cpu"):
        return container.read("data")[::-1]


def test_entry_point_codec(monkeypatch, tmp_path):
    ep = EntryPoint("test/reversed", f"{__name__}:Reversed", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep])
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    assert "test/reversed" in registry.available()
    a = np.linspace(0, 1, 11)
    nzip.encode(a, tmp_path / "r.nz", codec="test/reversed")
    assert np.array_equal(nzip.decode(tmp_path / "r.nz"), a)
