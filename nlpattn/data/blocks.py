"""Training windows from a token cache: random (deterministic, resumable) and sequential.

`RandomBlocks[i]` is the window at a position drawn from a hash of (seed, i): any sample can be
recomputed without replaying the ones before it, so the data position of a run is just
(seed, batches consumed). `BlockLoader` turns samples into collated batches, seeds the
collator per batch, and saves/restores that position; a resumed run sees identical batches.
Memory stays flat with corpus size: every window is a slice of the memory-mapped shards.
"""
from __future__ import annotations

import bisect
from typing import Callable, Iterator

import torch

from nlpattn.data.corpus import TokenCache
from nlpattn.errors import ConfigError

_MASK64 = (1 << 64) - 1


def mix64(*values: int) -> int:
    """A splitmix64-style hash of integers: deterministic across runs, platforms and versions."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _MASK64
        h ^= h >> 31
    return h


class RandomBlocks(torch.utils.data.Dataset):
    """Sample i = `block_size` tokens starting at a position hashed from (seed, i) (nanoGPT style).

    With a mixture (`cache.mixture`, from data.train_weights) a second hash of (seed, i) first
    picks the source with probability equal to its weight, then the window lies inside that source.
    """

    def __init__(self, cache: TokenCache, block_size: int, seed: int = 0, num_samples: int | None = None) -> None:
        if len(cache) < block_size:
            raise ConfigError(f"data.block_size={block_size} is longer than the corpus "
                              f"({len(cache)} tokens in {cache.directory})")
        self.cache, self.block_size, self.seed = cache, block_size, seed
        self.n_positions = len(cache) - block_size + 1
        self.num_samples = num_samples if num_samples is not None else max(1, len(cache) // block_size)
        self.sources = _mixture_tables(getattr(cache, "mixture", None), block_size)

    def __len__(self) -> int:
        return self.num_samples

    def position(self, i: int) -> int:
        """Start offset of sample `i` (any i >= 0, not only i < len)."""
        if self.sources is None:
            return mix64(self.seed, i) % self.n_positions
        thresholds, tables = self.sources
        k = min(bisect.bisect_right(thresholds, mix64(self.seed, i, _SOURCE_SALT)), len(tables) - 1)
        starts, cum = tables[k]  # window starts per range: [starts[r], starts[r] + cum[r+1] - cum[r])
        j = mix64(self.seed, i) % cum[-1]
        r = bisect.bisect_right(cum, j) - 1
        return starts[r] + j - cum[r]

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.cache.window(self.position(int(i)), self.block_size))


_SOURCE_SALT = 0x5EED50C


def _mixture_tables(mixture, block_size: int):
    """(64-bit cumulative weight thresholds, per source (range starts, cumulative window counts))."""
    if not mixture:
        return None
    thresholds, tables, acc = [], [], 0.0
    for weight, ranges, name in mixture:
        counts = [max(0, e - s - block_size + 1) for s, e in ranges]
        if sum(counts) == 0:
            raise ConfigError(f"data.train_weights: {name} has no stretch of data.block_size={block_size} "
                              f"tokens ({sum(e - s for s, e in ranges)} training tokens)")
        cum = [0]
        for c in counts:
            cum.append(cum[-1] + c)
        tables.append(([s for s, _ in ranges], cum))
        acc += weight
        thresholds.append(min(int(acc * 2.0 ** 64), _MASK64))
    return thresholds, tables


class SequentialBlocks(torch.utils.data.Dataset):
    """Non-overlapping windows [k*block_size, (k+1)*block_size): a fixed validation set."""

    def __init__(self, cache: TokenCache, block_size: int, max_blocks: int | None = None) -> None:
        n = len(cache) // block_size
        if n == 0:
            raise ConfigError(f"data.block_size={block_size} is longer than the validation corpus "
                              f"({len(cache)} tokens in {cache.directory})")
        self.cache, self.block_size = cache, block_size
        self.n = n if max_blocks is None else min(n, max_blocks)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return torch.from_numpy(self.cache.window(int(i) * self.block_size, self.block_size))


class BlockLoader:
    """Endless, resumable batches: batch b holds samples [(b*world + rank)*B, +B) of `dataset`.

    The collator is called with a `torch.Generator` seeded from (seed, b, rank), so masking
    is part of the reproducible data position too. `state_dict()` → {"seed", "batches"}.
    """

    def __init__(self, dataset: RandomBlocks, batch_size: int, collate: Callable, seed: int = 0,
                 rank: int = 0, world_size: int = 1, start_batch: int = 0) -> None:
        self.dataset, self.batch_size, self.collate = dataset, batch_size, collate
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.batches = start_batch  # batches consumed so far by this process

    def batch(self, b: int) -> dict:
        """Batch number `b` (deterministic; does not move the position)."""
        first = (b * self.world_size + self.rank) * self.batch_size
        samples = [self.dataset[first + j] for j in range(self.batch_size)]
        gen = torch.Generator().manual_seed(mix64(self.seed, b, self.rank) >> 1)
        return self.collate(samples, generator=gen)

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        out = self.batch(self.batches)
        self.batches += 1
        return out

    def state_dict(self) -> dict:
        """The data position to store in a checkpoint."""
        return {"seed": self.seed, "batches": self.batches, "batch_size": self.batch_size,
                "block_size": self.dataset.block_size, "sample_seed": self.dataset.seed}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a stored position (batch size and block size must match)."""
        for key, mine in (("batch_size", self.batch_size), ("block_size", self.dataset.block_size)):
            if key in state and state[key] != mine:
                raise ConfigError(f"cannot resume data position: {key} was {state[key]}, now {mine}")
        self.seed, self.batches = int(state["seed"]), int(state["batches"])
        self.dataset.seed = int(state.get("sample_seed", self.dataset.seed))


def validation_batches(dataset: SequentialBlocks, batch_size: int, collate: Callable,
                       seed: int = 1234) -> Iterator[dict]:
    """The fixed validation set in order; collator randomness (masking) seeded identically each time."""
    for b, first in enumerate(range(0, len(dataset), batch_size)):
        samples = [dataset[i] for i in range(first, min(first + batch_size, len(dataset)))]
        yield collate(samples, generator=torch.Generator().manual_seed(mix64(seed, b) >> 1))
