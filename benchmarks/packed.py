"""Read and write dataset packs from benchmark scripts (``from packed import load_packed``).

The format and its reader live in :mod:`fermetric.data.packed`, so that an installed fermetric
reads packs too (``--data packed=.pack/fer2013.npz`` in every command); this module only gives
the benchmark scripts their names. ``load_packed(path, split)`` needs numpy and the standard
library's lzma, not the dataset readers' image decoders or the original files.
"""

from fermetric.data.packed import FORMAT, load_packed, pack_splits, read_pack_meta, write_packed

__all__ = ["FORMAT", "load_packed", "pack_splits", "read_pack_meta", "write_packed"]
