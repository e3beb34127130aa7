"""A grid of a few fixed test queries and their top-k retrieved images, correct ones in green.

Queries are chosen once per run (seeded, one per class) so that the grids of successive
epochs show the same queries and can be compared.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

import hardneg.analysis.figures  # noqa: F401 - selects the headless Agg backend


def pick_queries(labels: Tensor, num: int = 6, seed: int = 0, is_query: Tensor | None = None) -> Tensor:
    """Row indices of ``num`` queries from distinct classes that have another member to find."""
    labels = labels.cpu()
    candidates = torch.ones(len(labels), dtype=torch.bool) if is_query is None else is_query.cpu().bool()
    references = ~candidates if is_query is not None else torch.ones_like(candidates)
    ref_counts = torch.bincount(labels[references], minlength=int(labels.max()) + 1 if len(labels) else 0)
    findable = ref_counts[labels] > (0 if is_query is not None else 1)
    rows = torch.nonzero(candidates & findable).flatten()
    generator = torch.Generator().manual_seed(seed)
    rows = rows[torch.randperm(len(rows), generator=generator)]
    chosen, seen = [], set()
    for row in rows.tolist():
        if int(labels[row]) not in seen:
            seen.add(int(labels[row]))
            chosen.append(row)
        if len(chosen) == num:
            break
    return torch.tensor(chosen, dtype=torch.long)


def top_k(embeddings: Tensor, labels: Tensor, query_rows: Tensor, k: int = 5,
          is_query: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(result rows [Q, k], correct [Q, k]): nearest references by cosine, the query excluded."""
    e = F.normalize(embeddings.detach().float().cpu(), dim=1)
    labels = labels.cpu()
    sim = e[query_rows] @ e.T
    sim[torch.arange(len(query_rows)), query_rows] = -float("inf")
    if is_query is not None:  # query/gallery protocol: retrieve from the gallery only
        sim[:, is_query.cpu().bool()] = -float("inf")
    rows = sim.topk(min(k, e.shape[0] - 1), dim=1).indices
    return rows, labels[rows] == labels[query_rows][:, None]


def display_image(x: Tensor, mean=None, std=None) -> np.ndarray:
    """[C, H, W] model input -> [H, W, 3] in [0, 1]: undo the normalisation when known, else
    stretch to the full range."""
    x = x.detach().float().cpu()
    if mean is not None and std is not None and len(mean) == x.shape[0]:
        x = x * torch.tensor(std, dtype=torch.float32)[:, None, None] + torch.tensor(mean, dtype=torch.float32)[:, None, None]
    else:
        x = (x - x.min()) / (x.max() - x.min()).clamp(min=1e-8)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return x.clamp(0, 1).permute(1, 2, 0).numpy()


BORDER = 3  # pixels of the green / red frame
COLOURS = {"query": (0.1, 0.1, 0.1), True: (0.17, 0.63, 0.17), False: (0.84, 0.15, 0.16)}


def _framed(image: np.ndarray, colour, size: int) -> np.ndarray:
    """``image`` resized (nearest) to size x size inside a coloured frame."""
    h, w = image.shape[:2]
    rows, cols = np.arange(size) * h // size, np.arange(size) * w // size
    cell = np.empty((size + 2 * BORDER, size + 2 * BORDER, 3))
    cell[:] = colour
    cell[BORDER:-BORDER, BORDER:-BORDER] = image[rows][:, cols]
    return cell


def plot_retrieval_grid(query_images: list, result_images: list[list], correct: Tensor, path: str | Path,
                        query_titles: list[str] | None = None, result_titles: list[list[str]] | None = None,
                        title: str = "", cell: int = 64) -> Path:
    """One row per query: the query, then its top-k results framed green (same class) or red.

    Drawn as one mosaic image (one ``imshow``), not a subplot per cell: dozens of subplots
    take seconds to lay out, and this runs after every evaluation.
    """
    import matplotlib.pyplot as plt

    k = len(result_images[0]) if result_images else 0
    framed = cell + 2 * BORDER
    gap, step, row_step = 8, framed + 6, framed + 16  # row_step leaves room for the class names
    canvas = np.ones((len(query_images) * row_step, (k + 1) * step + gap, 3))
    labels = []
    for r, query in enumerate(query_images):
        cells = [(query, COLOURS["query"], query_titles[r] if query_titles else "query")]
        cells += [(image, COLOURS[bool(correct[r, c])], result_titles[r][c] if result_titles else "")
                  for c, image in enumerate(result_images[r])]
        for c, (image, colour, label) in enumerate(cells):
            y, x = r * row_step, c * step + (gap if c else 0)  # a wider gap after the query column
            canvas[y:y + framed, x:x + framed] = _framed(image, colour, cell)
            labels.append((x + framed / 2, y + framed + 1, label, colour))
    scale = 1.0 / 72  # inches per canvas pixel at this cell size: cells of ~0.9 inch
    fig = plt.figure(figsize=(canvas.shape[1] * scale + 0.2, canvas.shape[0] * scale + 0.6))
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.9))
    ax.imshow(canvas, interpolation="nearest")
    for x, y, label, colour in labels:
        ax.text(x, y, label, ha="center", va="top", fontsize=7, color=colour)
    ax.set_axis_off()
    fig.suptitle(title or "queries (left) and top results: green = same class", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def image_test_set(datamodule):
    """The test split with images (not the cached features that may have replaced them), or None."""
    splits = getattr(datamodule, "image_splits", None) or getattr(datamodule, "splits", None)
    if splits is None or len(splits.test) == 0:
        return None
    first = splits.test[0][0]
    return splits.test if isinstance(first, Tensor) and first.dim() == 3 else None


def write_retrieval_grid(dataset, evaluation, path: str | Path, query_rows: Tensor, k: int = 5,
                         mean=None, std=None, class_names: list[str] | None = None, title: str = "") -> Path:
    """Draw ``query_rows`` of an evaluation with their top-k results, images from ``dataset``.

    ``evaluation``: a ``hardneg.evaluation.Evaluation`` (its ranking supplies the neighbours), or
    a saved record (``embeddings``, ``labels``, ``indices``: the dataset index of each row,
    optional ``is_query``), whose neighbours are then searched here."""
    if isinstance(evaluation, dict):
        labels, indices = evaluation["labels"].cpu(), evaluation["indices"].cpu()
        rows, correct = top_k(evaluation["embeddings"], labels, query_rows, k, evaluation.get("is_query"))
    else:
        labels, indices = evaluation.labels.cpu(), evaluation.indices.cpu()
        rows, correct = evaluation.neighbours(query_rows, k)

    def image(row: int) -> np.ndarray:
        return display_image(dataset[int(indices[row])][0], mean, std)

    def name(row: int) -> str:
        label = int(labels[row])
        return class_names[label] if class_names and label < len(class_names) else f"class {label}"

    queries = [image(int(q)) for q in query_rows]
    results = [[image(int(r)) for r in row] for row in rows]
    result_titles = [[name(int(r)) for r in row] for row in rows]
    return plot_retrieval_grid(queries, results, correct, path, [name(int(q)) for q in query_rows], result_titles,
                               title)
