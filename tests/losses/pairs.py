"""Shared driver: a pair/proxy loss through the Criterion vs its brute-force loop."""
from __future__ import annotations

import torch
from bruteforce import assert_close

from hardneg.criterion import Criterion


def check_against_brute_force(loss_module, reference, scenario, extra_leaves=()):
    """Value and gradients (refs and any extra leaves such as proxies) equal the loop's."""
    anchors, labels, refs, ref_labels, self_index = scenario.inputs()
    leaves = [scenario.refs, *extra_leaves]
    for leaf in leaves:
        leaf.grad = None
    criterion = Criterion(loss_module)
    if scenario.is_self:
        loss, stats = criterion(anchors, labels)
    else:
        loss, stats = criterion(anchors, labels, refs, ref_labels, self_index)
    loss.backward()
    grads = [leaf.grad.clone() for leaf in leaves]
    for leaf in leaves:
        leaf.grad = None
    anchors, labels, refs, ref_labels, self_index = scenario.inputs()
    expected = reference(anchors, labels, refs, ref_labels, self_index)
    expected.backward()
    assert_close(loss.detach(), expected.detach())
    for got, leaf in zip(grads, leaves):
        want = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
        assert_close(got, want)
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)
    return loss, stats
