"""nzip: compress the data of machine learning into chunked, random-access zarr containers."""
__version__ = "0.1.0"
