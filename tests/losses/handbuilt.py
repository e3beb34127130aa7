"""A hand-built 3-D batch whose similarities are exact decimals (3-4-5 triangles).

    e0 = (1, 0, 0)      class 0        similarities  e0   e1    e2    e3
    e1 = (.6, .8, 0)    class 0                  e0   1   .6    .8    0
    e2 = (.8, 0, .6)    class 1                  e1  .6   1     .48   .64
    e3 = (0, .8, .6)    class 1                  e2  .8  .48    1     .36
                                                 e3   0  .64   .36    1
Each anchor has one positive (its class mate): S_ap = .6 for 0 and 1, .36 for 2 and 3.
Hardest negatives:   0 -> 2 (.8),  1 -> 3 (.64),  2 -> 0 (.8),  3 -> 1 (.64)   all S_an > S_ap
Semi-hard negatives: 0 -> 3 (0),   1 -> 2 (.48),  2 -> none (.8, .48 > .36),    3 -> 0 (0)
"""
import torch

EMBEDDINGS = [[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.8, 0.0, 0.6], [0.0, 0.8, 0.6]]
LABELS = [0, 0, 1, 1]


def batch():
    return torch.tensor(EMBEDDINGS, dtype=torch.float64, requires_grad=True), torch.tensor(LABELS)
