"""Fused ops, each with its pure-PyTorch reference (`*_reference`) beside it."""
from .cpu_cache import cpu_cache_stats, empty_cpu_cache
from .group_energy import check_partition, group_energy, group_energy_reference, group_means
from .langevin_step import langevin_step, langevin_step_reference

__all__ = [
    "group_energy",
    "group_energy_reference",
    "group_means",
    "check_partition",
    "langevin_step",
    "langevin_step_reference",
    "cpu_cache_stats",
    "empty_cpu_cache",
]
