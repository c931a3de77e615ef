"""Containers (zarr v3 items) and one reader/writer per modality."""
from .container import ArraySpec, Item, open_item, write_item

__all__ = ["ArraySpec", "Item", "open_item", "write_item"]
