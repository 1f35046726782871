"""One epoch's minibatches: the shuffling and progress bar every training loop here shares."""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm


def epoch_batches(
    n: int, batch_size: int, *, generator: torch.Generator | None, description: str, progress: bool
) -> tqdm[Tensor]:
    """The minibatches of one epoch over n examples, as index tensors of at most `batch_size`.

    The order is a fresh permutation of range(n) drawn from `generator` (so a fixed seed gives a fixed
    run); iterating the returned tqdm bar yields the batches, and `set_postfix` shows running numbers.
    """
    order = torch.randperm(n, generator=generator)
    return tqdm(order.split(batch_size), desc=description, disable=not progress, leave=False)
