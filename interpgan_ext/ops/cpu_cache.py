"""The compiled CPU ops keep the large buffers their outputs release (df, dW, the saved statistics, the Langevin
step's z') and hand them out again, already mapped: fresh memory of that size costs a page fault and the kernel's
zeroing of every page, a third of group_energy's backward at the 512-filter shape. Like `torch.cuda.empty_cache()`,
`empty_cpu_cache()` frees what no tensor uses. `INTERPGAN_CPU_CACHE_MB` caps the cached bytes (default 1024; 0 turns
the cache off). Without the extension there is no cache, and the stats are all 0."""
from .. import _backend

_NO_CACHE = {"cached_bytes": 0, "cached_blocks": 0, "in_use_bytes": 0, "hits": 0, "misses": 0, "limit_bytes": 0}


def cpu_cache_stats() -> dict:
    """Bytes and buffers cached and in use, requests served from the cache (hits) or fresh (misses), the cap."""
    if not hasattr(_backend._C, "cpu_cache_stats"):  # no extension, or one built before the cache
        return dict(_NO_CACHE)
    return dict(_backend._C.cpu_cache_stats())


def empty_cpu_cache() -> None:
    """Frees every cached buffer that no tensor uses."""
    if hasattr(_backend._C, "empty_cpu_cache"):
        _backend._C.empty_cpu_cache()
