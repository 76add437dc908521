"""The v1 sparse activation cache: layout, memory-mapped reader, atomic writer, audit."""

from .layout import KEY_SPACE, make_key, split_key
from .reader import BaseArrays, Cache, RowArrays, open_cache

__all__ = ["KEY_SPACE", "make_key", "split_key", "Cache", "RowArrays", "BaseArrays", "open_cache"]
