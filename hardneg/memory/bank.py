"""A FIFO ring buffer of (embedding, label, dataset index), kept as module buffers so that
it travels with ``state_dict`` (a resumed run mines against the bank it had)."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class MemoryBank(nn.Module):
    """The last ``size`` enqueued samples; ``get()`` returns them oldest first.

    Entries are stored detached: gradients never reach a past step's embeddings.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 1:
            raise ValueError(f"memory.size must be >= 1, got {size}")
        if dim < 1:
            raise ValueError(f"memory bank dim must be >= 1 (model.dim), got {dim}")
        self.size, self.dim = size, dim
        self.register_buffer("embeddings", torch.zeros(size, dim))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("indices", torch.full((size,), -1, dtype=torch.long))
        # Samples enqueued so far (ever): the write position is total % size.
        self.register_buffer("total", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return min(int(self.total), self.size)

    @torch.no_grad()
    def enqueue(self, embeddings: Tensor, labels: Tensor, indices: Tensor | None = None) -> None:
        """Append rows in order; the oldest entries are overwritten once the bank is full."""
        if embeddings.shape[-1] != self.dim:
            raise ValueError(f"memory bank holds {self.dim}-d embeddings, got {tuple(embeddings.shape)}")
        if indices is None:
            indices = torch.full_like(labels, -1)
        n = len(labels)
        if n >= self.size:  # only the newest `size` rows can survive
            embeddings, labels, indices = embeddings[-self.size:], labels[-self.size:], indices[-self.size:]
            start = (int(self.total) + n - self.size) % self.size
        else:
            start = int(self.total) % self.size
        slots = (start + torch.arange(len(labels), device=self.labels.device)) % self.size
        self.embeddings[slots] = embeddings.detach().to(self.embeddings)
        self.labels[slots] = labels.to(self.labels)
        self.indices[slots] = indices.to(self.indices)
        self.total += n

    def get(self) -> tuple[Tensor, Tensor, Tensor]:
        """(embeddings, labels, dataset indices) of the stored samples, oldest first."""
        filled = len(self)
        if filled < self.size:
            order = torch.arange(filled, device=self.labels.device)
        else:
            order = (int(self.total) + torch.arange(self.size, device=self.labels.device)) % self.size
        return self.embeddings[order], self.labels[order], self.indices[order]

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"
