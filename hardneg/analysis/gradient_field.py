"""Gradient vector field of a triplet loss over triplet space (the paper's Figure-style analysis).

For every (S_ap, S_an) on a grid: unit vectors a, p, n with exactly those similarities (and a
chosen S_pn), one SGD step of the loss on a, p and n through autograd (the project's own loss
object, so a new loss gets its figure for free), renormalisation, and the resulting change
(ΔS_ap, ΔS_an) drawn as an arrow.

    python -m hardneg.analysis.gradient_field loss=sct [loss.lam=0.5] [s_pn=near] [out=field.png]

S_pn is not fixed by (S_ap, S_an): it ranges over [S_ap·S_an − r, S_ap·S_an + r] with
r = sqrt((1 − S_ap²)(1 − S_an²)). ``near`` (default) takes the top: p and n on the same side of
a, the geometry of the paper's argument, where moving the anchor toward its positive also moves
it toward a hard negative. ``orthogonal`` takes the middle, ``far`` the bottom; a number is used
as is (grid points where it is impossible are left empty).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

S_PN_MODES = ("near", "orthogonal", "far")
OPTIONS = {"s_pn": "near", "grid": 20, "lr": 0.01, "out": None}


def resolve_s_pn(s_ap: float, s_an: float, s_pn: str | float) -> float:
    spread = math.sqrt(max(0.0, (1 - s_ap**2) * (1 - s_an**2)))
    if s_pn == "near":
        return s_ap * s_an + spread
    if s_pn == "orthogonal":
        return s_ap * s_an
    if s_pn == "far":
        return s_ap * s_an - spread
    if isinstance(s_pn, str):
        raise ValueError(f"s_pn={s_pn!r} is unknown; choose one of {list(S_PN_MODES)} or a number in [-1, 1]")
    return float(s_pn)


def triplet_vectors(s_ap: np.ndarray, s_an: np.ndarray, s_pn: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors a, p, n in R³ ([G, 3, 3], rows a, p, n) with the given pairwise
    similarities (a Cholesky factor of their Gram matrix), and a [G] mask of the feasible ones."""
    s_ap, s_an, s_pn = (torch.as_tensor(np.asarray(v, dtype=np.float64)).reshape(-1) for v in (s_ap, s_an, s_pn))
    one = torch.ones_like(s_ap)
    gram = torch.stack([torch.stack([one, s_ap, s_an], -1), torch.stack([s_ap, one, s_pn], -1),
                        torch.stack([s_an, s_pn, one], -1)], -2)
    feasible = torch.linalg.eigvalsh(gram).amin(-1) > -1e-9
    # Cholesky of a singular Gram fails; a tiny ridge keeps boundary cases (e.g. ``near``) drawable.
    gram = torch.where(feasible[:, None, None], gram, torch.eye(3, dtype=gram.dtype))
    factor = torch.linalg.cholesky(gram + 1e-10 * torch.eye(3, dtype=gram.dtype))
    return F.normalize(factor, dim=-1), feasible


def loss_partials(loss: nn.Module, s_ap: torch.Tensor, s_an: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """dL/dS_ap and dL/dS_an of each triplet *on its own* (a batch of one per call): a batch
    reduction (a mean, SCT's separate means) must not couple the grid points.

    A plain loop (~2 ms a point): ``torch.func.vmap`` would batch it but costs ~5 s to warm
    up in a fresh process and rejects losses with data-dependent Python control flow.
    """
    d_ap, d_an = torch.zeros_like(s_ap, dtype=torch.float64), torch.zeros_like(s_an, dtype=torch.float64)
    for i in range(len(s_ap)):
        ap = s_ap[i].detach().float().reshape(1).requires_grad_(True)
        an = s_an[i].detach().float().reshape(1).requires_grad_(True)
        g_ap, g_an = torch.autograd.grad(loss(ap, an)[0], (ap, an), allow_unused=True)
        d_ap[i] = 0.0 if g_ap is None else float(g_ap)
        d_an[i] = 0.0 if g_an is None else float(g_an)
    return d_ap, d_an


def similarity_steps(loss: nn.Module, s_ap: np.ndarray, s_an: np.ndarray, s_pn: str | float = "near",
                     lr: float = OPTIONS["lr"]) -> tuple[np.ndarray, np.ndarray]:
    """(ΔS_ap, ΔS_an) after one SGD step of ``loss`` on each triplet (NaN where infeasible).

    The loss sees normalised vectors, as in the network (whose output is L2-normalised), so the
    step is along the sphere's tangent; it is then renormalised onto the sphere.
    """
    s_ap, s_an = np.asarray(s_ap, dtype=np.float64), np.asarray(s_an, dtype=np.float64)
    pn = np.vectorize(lambda ap, an: resolve_s_pn(ap, an, s_pn))(s_ap, s_an)
    vectors, feasible = triplet_vectors(s_ap, s_an, pn)
    x = vectors.clone().requires_grad_(True)
    e = F.normalize(x, dim=-1)
    sim_ap, sim_an = (e[:, 0] * e[:, 1]).sum(-1), (e[:, 0] * e[:, 2]).sum(-1)
    g_ap, g_an = loss_partials(loss, sim_ap, sim_an)
    (grad,) = torch.autograd.grad((sim_ap, sim_an), x, grad_outputs=(g_ap, g_an))
    moved = F.normalize(x.detach() - lr * grad, dim=-1)
    # Differences against the constructed vectors' own similarities (not the requested ones),
    # so round-off of the construction does not show up as motion.
    d_ap = (moved[:, 0] * moved[:, 1]).sum(-1) - sim_ap.detach()
    d_an = (moved[:, 0] * moved[:, 2]).sum(-1) - sim_an.detach()
    nan = torch.full_like(d_ap, float("nan"))
    d_ap, d_an = torch.where(feasible, d_ap, nan), torch.where(feasible, d_an, nan)
    return d_ap.numpy().reshape(s_ap.shape), d_an.numpy().reshape(s_an.shape)


def similarity_step(loss: nn.Module, s_ap: float, s_an: float, s_pn: str | float = "near",
                    lr: float = OPTIONS["lr"]) -> tuple[float, float]:
    """(ΔS_ap, ΔS_an) of one triplet; see ``similarity_steps``."""
    d_ap, d_an = similarity_steps(loss, np.array([s_ap]), np.array([s_an]), s_pn, lr)
    return float(d_ap[0]), float(d_an[0])


def grid_centres(grid: int) -> np.ndarray:
    """Centres of ``grid`` equal cells of [-1, 1]: never exactly ±1, where a, p, n coincide."""
    edges = np.linspace(-1, 1, grid + 1)
    return (edges[:-1] + edges[1:]) / 2


def gradient_field(loss: nn.Module, grid: int = OPTIONS["grid"], s_pn: str | float = "near",
                   lr: float = OPTIONS["lr"]) -> dict[str, np.ndarray]:
    """Arrays ``s_ap``, ``s_an`` (meshgrid, [grid, grid]) and ``d_ap``, ``d_an`` of the step."""
    if not getattr(loss, "needs_triplets", True):
        raise ValueError(f"{type(loss).__name__} is not a triplet loss (forward(s_ap, s_an)); "
                         "its gradient does not live in triplet space")
    centres = grid_centres(grid)
    s_ap, s_an = np.meshgrid(centres, centres)
    d_ap, d_an = similarity_steps(loss, s_ap, s_an, s_pn, lr)
    return {"s_ap": s_ap, "s_an": s_an, "d_ap": d_ap, "d_an": d_an}


def plot_gradient_field(field: dict[str, np.ndarray], path: str | Path, title: str,
                        threshold: float | None = None) -> Path:
    """Arrows of unit length show the direction; their colour the size of the step (log10)."""
    from hardneg.analysis.figures import draw_triplet_square, new_figure, save_figure, wrap

    d_ap, d_an = field["d_ap"], field["d_an"]
    size = np.hypot(d_ap, d_an)
    moving = size > 1e-9
    with np.errstate(invalid="ignore", divide="ignore"):
        u, v = np.where(moving, d_ap / size, np.nan), np.where(moving, d_an / size, np.nan)
        colour = np.log10(np.where(moving, size, np.nan))
    fig, (ax,) = new_figure(5.4, 4.8)
    arrows = ax.quiver(field["s_ap"], field["s_an"], u, v, colour, cmap="plasma", angles="xy", pivot="mid",
                       scale_units="xy", scale=1.0 / (1.6 / len(d_ap)), width=0.004)
    still = ~moving & np.isfinite(size)
    ax.scatter(field["s_ap"][still], field["s_an"][still], s=3, color="0.6", label="no gradient")
    fig.colorbar(arrows, ax=ax, shrink=0.8, label="log10 |(ΔS_ap, ΔS_an)|")
    draw_triplet_square(ax, threshold)
    ax.legend(loc="upper left", fontsize=7)
    ax.set_title(wrap(title), fontsize=9)
    return save_figure(fig, path)


def describe(loss: nn.Module) -> str:
    extra = loss.extra_repr() if hasattr(loss, "extra_repr") else ""
    return f"{type(loss).__name__}({extra})"


def write_gradient_field(loss: nn.Module, path: str | Path, s_pn: str | float = "near",
                         grid: int = OPTIONS["grid"], lr: float = OPTIONS["lr"]) -> Path:
    field = gradient_field(loss, grid, s_pn, lr)
    title = f"{describe(loss)}\none SGD step (lr {lr:g}) on a, p, n; S_pn: {s_pn}"
    return plot_gradient_field(field, path, title, getattr(loss, "threshold", None))


def _parse(argv: list[str]) -> tuple[list[str], dict]:
    """Hydra-style ``key=value``: ``loss...`` keys are config overrides, the rest are OPTIONS."""
    overrides, options = [], dict(OPTIONS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise SystemExit(f"expected key=value, got {arg!r}")
        if key.lstrip("+~").split(".")[0] == "loss":
            overrides.append(arg)
        elif key in options:
            options[key] = value
        else:
            raise SystemExit(f"unknown option {key!r}; use loss=<name>, loss.<param>=..., or one of {sorted(OPTIONS)}")
    try:
        options["s_pn"] = float(options["s_pn"])
    except ValueError as err:
        if options["s_pn"] not in S_PN_MODES:
            message = f"s_pn={options['s_pn']!r} is unknown; choose one of {list(S_PN_MODES)} or a number"
            raise SystemExit(message) from err
    options["grid"], options["lr"] = int(options["grid"]), float(options["lr"])
    return overrides, options


def main(argv: list[str] | None = None) -> Path:
    from hydra.utils import get_class, instantiate

    from hardneg.config import compose

    overrides, options = _parse(sys.argv[1:] if argv is None else argv)
    cfg = compose(overrides)
    if not getattr(get_class(cfg.loss._target_), "needs_triplets", True):
        raise SystemExit(f"{cfg.loss._target_} is not a triplet loss (forward(s_ap, s_an)): no triplet-space field")
    loss = instantiate(cfg.loss)
    name = next((o.split("=", 1)[1] for o in overrides if o.split("=")[0] == "loss"), "sct")
    out = options["out"] or f"gradient_field_{name}.png"
    path = write_gradient_field(loss, out, options["s_pn"], options["grid"], options["lr"])
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
