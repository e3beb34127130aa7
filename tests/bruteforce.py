"""Brute-force references for the mining and loss tests: explicit Python loops over anchors,
pairs and triplets, written from the definitions in docs/method.md (and the baselines' papers),
sharing no code with hardneg.

Mining decisions compare the entries of the similarity matrix the miner saw (so exact ties,
e.g. from duplicated images, are broken the same way: first column wins); the loss values
are rebuilt from explicit dot products, so their gradients come from autograd on the loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

DUPLICATE = 0.9999


# ----------------------------------------------------------------------------- scenarios
@dataclass
class Scenario:
    name: str
    refs: torch.Tensor  # [M, D] leaf, unit rows
    ref_labels: torch.Tensor  # [M]
    start: int  # anchors are refs[start:stop] (a DDP rank's slice when not the whole batch)
    stop: int

    @property
    def is_self(self) -> bool:
        return self.start == 0 and self.stop == len(self.refs)

    def inputs(self):
        """(anchors, labels, refs, ref_labels, self_index) with anchors a view of the leaf."""
        refs = self.refs
        anchors = refs[self.start:self.stop]
        self_index = torch.arange(self.start, self.stop)
        return anchors, self.ref_labels[self.start:self.stop], refs, self.ref_labels, self_index


def _unit(n, d, g, dtype=torch.float64):
    return F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1)


def scenarios(seed: int = 0) -> list[Scenario]:
    """Small batches covering the corner cases the issue lists."""
    g = torch.Generator().manual_seed(seed)
    out = []
    lab = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    out.append(Scenario("random", _unit(12, 5, g), lab[torch.randperm(12, generator=g)], 0, 12))
    # 2-D: crowded circle, many anchors whose every negative is harder than the positive.
    out.append(Scenario("random_2d", _unit(10, 2, g), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 3]), 0, 10))
    e = _unit(12, 4, g)
    e[1] = e[0]  # duplicate inside a class: never a positive
    e[4] = e[3]  # duplicate across classes: a negative with similarity 1
    e[9] = e[7]  # the positive of 7/8 duplicated as a negative (S_an == S_ap ties)
    out.append(Scenario("duplicates", e, torch.tensor([0, 0, 0, 1, 2, 2, 3, 3, 3, 4, 4, 1]), 0, 12))
    out.append(Scenario("singletons", _unit(9, 3, g), torch.tensor([0, 1, 2, 3, 3, 4, 5, 5, 5]), 0, 9))
    out.append(Scenario("only_duplicates", torch.cat([_unit(3, 3, g)] * 2)[[0, 3, 1, 4, 2, 5]],
                        torch.tensor([0, 0, 1, 1, 2, 2]), 0, 6))
    out.append(Scenario("all_same_label", _unit(6, 3, g), torch.zeros(6, dtype=torch.long), 0, 6))
    out.append(Scenario("all_distinct_labels", _unit(6, 3, g), torch.arange(6), 0, 6))
    # DDP-like: this rank's anchors are refs[4:10] of a 16-sample global batch.
    out.append(Scenario("ddp_slice", _unit(16, 4, g), torch.arange(16) % 5, 4, 10))
    for s in out:
        s.refs.requires_grad_(True)
    return out


# ----------------------------------------------------------------------------- mining
def candidates(sim, labels, ref_labels, self_index, i, threshold=DUPLICATE):
    """(positive columns, negative columns) allowed for anchor i."""
    own = None if self_index is None else int(self_index[i])
    pos = [j for j in range(len(sim[i]))
           if ref_labels[j] == labels[i] and j != own and sim[i][j] < threshold]
    neg = [k for k in range(len(sim[i])) if ref_labels[k] != labels[i]]
    return pos, neg


def _first_best(cols, score):
    best = None
    for c in cols:
        if best is None or score(c) > score(best):
            best = c
    return best


def positive_choices(sim_row, pos, strategy):
    """Deterministic choice list, or None for 'random' (any single one of ``pos``)."""
    if not pos:
        return []
    if strategy == "easy":
        return [_first_best(pos, lambda j: sim_row[j])]
    if strategy == "hard":
        return [_first_best(pos, lambda j: -sim_row[j])]
    if strategy == "all":
        return list(pos)
    return None


def negative_options(sim_row, neg, p, strategy):
    """The allowed negatives for positive p: a one-element list, all of them (random) or []."""
    if strategy == "semihard":
        allowed = [k for k in neg if sim_row[k] < sim_row[p]]
        return [_first_best(allowed, lambda k: sim_row[k])] if allowed else []
    if strategy == "hardest":
        return [_first_best(neg, lambda k: sim_row[k])] if neg else []
    if strategy == "easy":
        return [_first_best(neg, lambda k: -sim_row[k])] if neg else []
    return list(neg)  # random: any


def check_mined(mined, sim, labels, ref_labels, self_index, pos, neg):
    """Assert ``mined`` (list of (a, p, n)) is exactly what the definitions allow."""
    sim = sim.tolist()
    labels, ref_labels = labels.tolist(), ref_labels.tolist()
    by_anchor = {}
    for a, p, n in mined:
        by_anchor.setdefault(a, []).append((p, n))
    for i in range(len(sim)):
        pos_c, neg_c = candidates(sim, labels, ref_labels, self_index, i)
        got = sorted(by_anchor.get(i, []))
        chosen = positive_choices(sim[i], pos_c, pos)
        if chosen is None:  # random positive: at most one triplet, legal if present
            assert len(got) <= 1, (i, got)
            if got:
                p, n = got[0]
                assert p in pos_c
                options = negative_options(sim[i], neg_c, p, neg)
                assert n in options if neg == "random" else [n] == options, (i, p, n, options)
            else:  # absent: no positive, or some positive had no allowed negative
                assert any(not negative_options(sim[i], neg_c, p, neg) for p in pos_c) or not pos_c
            continue
        expected = []
        for p in chosen:
            options = negative_options(sim[i], neg_c, p, neg)
            if options:
                expected.append((p, options))
        assert len(got) == len(expected), (i, got, expected)
        for (p, n), (p_exp, options) in zip(got, sorted(expected)):
            assert p == p_exp, (i, p, p_exp)
            assert n in options if neg == "random" else n == options[0], (i, p, n, options)
    return mined


# ----------------------------------------------------------------------------- triplet losses
def nca(s_ap, s_an, tau=0.1):
    return -torch.log(torch.exp(s_ap / tau) / (torch.exp(s_ap / tau) + torch.exp(s_an / tau)))


def triplet_loss(kind, params, anchors, refs, sim, triplets):
    """Brute-force value of a triplet loss over explicit (a, p, n) triplets."""
    sim = sim.tolist()
    terms, hard_terms, easy_terms = [], [], []
    for a, p, n in triplets:
        s_ap, s_an = torch.dot(anchors[a], refs[p]), torch.dot(anchors[a], refs[n])
        v_ap, v_an = sim[a][p], sim[a][n]  # the values the decisions are made on
        if kind == "nca":
            terms.append(nca(s_ap, s_an, params.get("tau", 0.1)))
        elif kind == "sct":
            lam, tau, thr = params.get("lam", 1.0), params.get("tau", 0.1), params.get("threshold", 0.8)
            rule = params.get("hard_rule", "official")
            if rule == "paper":
                hard, easy = v_an > v_ap, not v_an > v_ap
            elif rule == "official":
                hard, easy = (v_an > v_ap or v_an > thr), (v_an < v_ap and v_an < thr)
            else:
                hard = v_an > v_ap and v_an > thr
                easy = not hard
            if hard:
                hard_terms.append(lam * s_an)
            elif easy:
                easy_terms.append(nca(s_ap, s_an, tau))
        elif kind == "margin":
            m, dist = params.get("margin", 0.2), params.get("distance", "euclidean")
            if dist == "cosine":
                d_ap, d_an = 1 - s_ap, 1 - s_an
            elif dist == "squared_euclidean":
                d_ap, d_an = 2 - 2 * s_ap, 2 - 2 * s_an
            else:
                d_ap = torch.sqrt(torch.clamp(2 - 2 * s_ap, min=1e-12))
                d_an = torch.sqrt(torch.clamp(2 - 2 * s_an, min=1e-12))
            terms.append(torch.relu(d_ap - d_an + m))
    zero = refs.sum() * 0
    if kind == "sct":
        if params.get("reduction", "official") == "official":
            n = len(hard_terms) + len(easy_terms)
            return sum(easy_terms + hard_terms, zero) / max(n, 1)
        easy = sum(easy_terms, zero) / len(easy_terms) if easy_terms else zero
        return easy + (sum(hard_terms, zero) / len(hard_terms) if hard_terms else zero)
    if not terms:
        return zero
    if kind == "margin" and params.get("reduction", "mean") == "nonzero":
        active = [t for t in terms if t.item() > 0]
        return sum(active, zero) / max(len(active), 1)
    return sum(terms, zero) / len(terms)


# ----------------------------------------------------------------------------- pair / proxy losses
def contrastive(anchors, labels, refs, ref_labels, self_index, pos_margin=1.0, neg_margin=0.5,
                reduction="nonzero"):
    pos_terms, neg_terms = [], []
    for i in range(len(anchors)):
        for j in range(len(refs)):
            s = torch.dot(anchors[i], refs[j])
            if labels[i] == ref_labels[j]:
                if j == int(self_index[i]) or s.item() >= DUPLICATE:
                    continue
                pos_terms.append(torch.relu(pos_margin - s))
            else:
                neg_terms.append(torch.relu(s - neg_margin))
    zero = refs.sum() * 0
    total = zero
    for terms in (pos_terms, neg_terms):
        if reduction == "nonzero":
            terms = [t for t in terms if t.item() > 0]
        if terms:
            total = total + sum(terms, zero) / len(terms)
    return total


def multi_similarity(anchors, labels, refs, ref_labels, self_index, alpha=2.0, beta=50.0, base=0.5,
                     margin=0.1):
    """The authors' per-anchor loop (Wang et al. 2019), with the project's duplicate rule."""
    total = refs.sum() * 0
    for i in range(len(anchors)):
        sims = [torch.dot(anchors[i], refs[j]) for j in range(len(refs))]
        pos = [sims[j] for j in range(len(refs)) if ref_labels[j] == labels[i]
               and j != int(self_index[i]) and sims[j].item() < DUPLICATE]
        neg = [sims[k] for k in range(len(refs)) if ref_labels[k] != labels[i]]
        if not pos or not neg:
            continue
        min_pos, max_neg = min(s.item() for s in pos), max(s.item() for s in neg)
        neg_kept = [s for s in neg if s.item() + margin > min_pos]
        pos_kept = [s for s in pos if s.item() - margin < max_neg]
        if not pos_kept or not neg_kept:
            continue
        pos_loss = torch.log(1 + sum(torch.exp(-alpha * (s - base)) for s in pos_kept)) / alpha
        neg_loss = torch.log(1 + sum(torch.exp(beta * (s - base)) for s in neg_kept)) / beta
        total = total + pos_loss + neg_loss
    return total / len(anchors)


def proxy_anchor(embeddings, labels, proxies, margin=0.1, alpha=32.0):
    """Kim et al. 2020, Eq. 4, one proxy at a time."""
    x = [e / e.norm() for e in embeddings]
    num_classes = len(proxies)
    pos_sum, neg_sum, with_pos = 0.0, 0.0, 0
    for c in range(num_classes):
        proxy = proxies[c] / proxies[c].norm()
        pos = [torch.exp(-alpha * (torch.dot(xi, proxy) - margin)) for xi, y in zip(x, labels) if y == c]
        neg = [torch.exp(alpha * (torch.dot(xi, proxy) + margin)) for xi, y in zip(x, labels) if y != c]
        if pos:
            with_pos += 1
            pos_sum = pos_sum + torch.log(1 + sum(pos))
        neg_sum = neg_sum + torch.log(1 + sum(neg, torch.zeros((), dtype=proxies.dtype)))
    return pos_sum / max(with_pos, 1) + neg_sum / num_classes


def assert_close(a, b, atol=1e-9):
    assert torch.allclose(torch.as_tensor(a), torch.as_tensor(b), atol=atol, rtol=0), (a, b)
    assert math.isfinite(float(torch.as_tensor(a).abs().max() if torch.as_tensor(a).numel() else 0.0))
