"""A bounded uniform sample of the rows of a stream, merged batch by batch (for quantiles and KID)."""
from typing import Optional

import torch


class Reservoir:
    """At most `capacity` rows, each row seen so far equally likely to be kept: a new batch of n rows takes
    its share capacity * n / (rows seen) of the sample, the rest is a random subset of the old sample."""

    def __init__(self, capacity: int, seed: int = 0):
        if capacity < 1:
            raise ValueError(f"Reservoir: capacity must be >= 1, got {capacity}")
        self.capacity, self.seen = capacity, 0
        self.rows: Optional[torch.Tensor] = None
        self.gen = torch.Generator().manual_seed(seed)

    def _subset(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return x if k >= len(x) else x[torch.randperm(len(x), generator=self.gen)[:k].to(x.device)]

    def add(self, rows: torch.Tensor):
        n = len(rows)
        if n == 0:
            return
        self.seen += n
        if self.rows is None:
            self.rows = self._subset(rows, self.capacity)
            return
        take = min(n, max(1, round(self.capacity * n / self.seen)))
        keep = min(len(self.rows), self.capacity - take)
        self.rows = torch.cat([self._subset(self.rows, keep), self._subset(rows, take)])
