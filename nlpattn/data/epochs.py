"""Epoch-based batches of variable-length examples (fine-tuning): shuffled, length-grouped,
sharded across processes, endless and resumable.

Epoch e is a permutation seeded by (seed, e). Within windows of `group` global batches the
examples are sorted by length, so a batch holds sentences of similar length and padding (the
wasted work of classification batches) stays small; the order of the batches is then shuffled
again, so training still sees lengths mixed. Global batch g is split across processes: process
r takes rows [r·B, (r+1)·B). The position is (epoch, batch in epoch): a resumed run continues
with the identical batch.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from nlpattn.data.blocks import mix64
from nlpattn.errors import ConfigError

GROUP_WINDOW = 50  # global batches per length-sorted window; 1 = plain shuffled batches


class EpochBatches:
    """Endless iterator of collated batches for this process; see the module docstring."""

    def __init__(self, examples: Sequence[dict], batch_size: int, collate: Callable, *, seed: int = 0,
                 rank: int = 0, world_size: int = 1, group: int = GROUP_WINDOW) -> None:
        self.examples, self.batch_size, self.collate = examples, batch_size, collate
        self.seed, self.rank, self.world_size, self.group = seed, rank, world_size, group
        self.global_batch = batch_size * world_size
        if len(examples) < self.global_batch:
            raise ConfigError(f"train.batch_size: {batch_size} × {world_size} processes is more than "
                              f"the {len(examples)} training examples")
        self.batches_per_epoch = len(examples) // self.global_batch  # the last partial batch is dropped
        self.lengths = torch.tensor([len(e["input_ids"]) for e in examples])
        self.position = 0  # batches consumed by this process (same on every process)
        self._epoch_order: tuple[int, list[torch.Tensor]] | None = None

    @property
    def epoch(self) -> float:
        """Passes over the training set so far (fractional)."""
        return self.position / self.batches_per_epoch

    def _order(self, epoch: int) -> list[torch.Tensor]:
        """The global batches (index tensors) of `epoch`, length-grouped then shuffled."""
        if self._epoch_order is not None and self._epoch_order[0] == epoch:
            return self._epoch_order[1]
        gen = torch.Generator().manual_seed(mix64(self.seed, epoch) >> 1)
        perm = torch.randperm(len(self.examples), generator=gen)[: self.batches_per_epoch * self.global_batch]
        window = self.group * self.global_batch
        batches = []
        for start in range(0, len(perm), window):
            chunk = perm[start:start + window]
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
            batches += list(chunk.split(self.global_batch))
        shuffle = torch.randperm(len(batches), generator=gen).tolist()
        batches = [batches[i] for i in shuffle]
        self._epoch_order = (epoch, batches)
        return batches

    def __iter__(self) -> "EpochBatches":
        return self

    def __next__(self) -> dict:
        epoch, index = divmod(self.position, self.batches_per_epoch)
        rows = self._order(epoch)[index]
        mine = rows[self.rank * self.batch_size:(self.rank + 1) * self.batch_size].tolist()
        self.position += 1
        return self.collate([self.examples[i] for i in mine])

    def state_dict(self) -> dict:
        """The data position to store in a checkpoint."""
        return {"seed": self.seed, "position": self.position, "batch_size": self.batch_size,
                "examples": len(self.examples)}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a stored position (same batch size and data)."""
        for key, mine in (("batch_size", self.batch_size), ("examples", len(self.examples))):
            if key in state and state[key] != mine:
                raise ConfigError(f"cannot resume data position: {key} was {state[key]}, now {mine}")
        self.seed, self.position = int(state["seed"]), int(state["position"])
        self._epoch_order = None


def sorted_eval_order(examples: Sequence[dict]) -> list[int]:
    """Indices of `examples` by length (eval batches with little padding); invert after."""
    return sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
