"""The implementations bench_losses.py compares (see its docstring): ours, the official code
re-typed op for op, and pytorch-metric-learning. Each ``build(task, variant)`` returns a step
``f(x, labels) -> scalar loss`` from raw features x [B, D]."""
from __future__ import annotations

# (task, variant) -> what runs. Tasks pair up variants that compute the same number.
TASKS = {
    "sct easy/hardest": ["ours", "official", "pml"],
    "nca easy/semihard (shn)": ["ours", "official"],
    "margin 0.2 euclidean easy/hardest": ["ours", "pml"],
    # The floor under every variant above: the L2 normalisation they all include.
    "l2-normalise only (in every variant)": ["shared"],
}


def official_step(method):
    """The official SCTLoss.forward, as written there (DataParallel-era plain PyTorch)."""
    import torch
    import torch.nn.functional as F

    def fun_CosSim(Mat_A, Mat_B, norm=1):
        D = Mat_A.mm(torch.t(Mat_B))
        D.fill_diagonal_(-norm)
        return D

    def Mat(Lvec):
        N = Lvec.size(0)
        Mask = Lvec.repeat(N, 1)
        Same = Mask == Mask.t()
        return Same.clone().fill_diagonal_(0), ~Same

    semi, sct, lam = method == "shn", method == "sct", 1.0

    def step(fvec, Lvec):
        N = Lvec.size(0)
        fvec_norm = F.normalize(fvec, p=2, dim=1)
        Same, Diff = Mat(Lvec.view(-1))
        CosSim = fun_CosSim(fvec_norm, fvec_norm)
        D_detach_P = CosSim.clone().detach()
        D_detach_P[Diff] = -1
        D_detach_P[D_detach_P > 0.9999] = -1
        V_pos, I_pos = D_detach_P.max(1)
        Mask_pos_valid = (V_pos > -1) & (V_pos < 1)
        Pos = CosSim[torch.arange(0, N), I_pos]
        Pos_log = Pos.clone().detach().cpu()  # noqa: F841 (logged by the official code)
        D_detach_N = CosSim.clone().detach()
        D_detach_N[Same] = -1
        if semi:
            D_detach_N[(D_detach_N > (V_pos.repeat(N, 1).t())) & Diff] = -1
        V_neg, I_neg = D_detach_N.max(1)
        Mask_neg_valid = (V_neg > -1) & (V_neg < 1)
        Neg = CosSim[torch.arange(0, N), I_neg]
        Neg_log = Neg.clone().detach().cpu()  # noqa: F841
        Mask_valid = Mask_pos_valid & Mask_neg_valid
        HardTripletMask = ((Neg > Pos) | (Neg > 0.8)) & Mask_valid
        EasyTripletMask = ((Neg < Pos) & (Neg < 0.8)) & Mask_valid
        hn_ratio = (Neg > Pos)[Mask_valid].clone().float().mean().cpu()  # noqa: F841
        Triplet_val = torch.stack([Pos, Neg], 1)
        Triplet_idx = torch.stack([I_pos, I_neg], 1)
        Triplet_val_log = Triplet_val.clone().detach().cpu()  # noqa: F841
        Triplet_idx_log = Triplet_idx.clone().detach().cpu()  # noqa: F841
        if sct:
            loss_hardtriplet = Neg[HardTripletMask].sum()
            loss_easytriplet = -F.log_softmax(Triplet_val[EasyTripletMask, :] / 0.1, dim=1)[:, 0].sum()
            N_hard = HardTripletMask.float().sum()
            N_easy = EasyTripletMask.float().sum()
            if torch.isnan(loss_hardtriplet) or N_hard == 0:
                loss_hardtriplet, N_hard = 0, 0
            if torch.isnan(loss_easytriplet) or N_easy == 0:
                loss_easytriplet, N_easy = 0, 0
            N = N_easy + N_hard
            if N == 0:
                N = 1
            return (loss_easytriplet + lam * loss_hardtriplet) / N
        return -F.log_softmax(Triplet_val[Mask_valid, :] / 0.1, dim=1)[:, 0].mean()

    return step


def pml_step(task):
    import torch
    import torch.nn.functional as F
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.losses import BaseMetricLossFunction, TripletMarginLoss
    from pytorch_metric_learning.miners import BatchEasyHardMiner

    class PMLSCTLoss(BaseMetricLossFunction):
        """SCT (official rule and normalisation) in PML's style."""

        def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
            a, p, _, n = indices_tuple  # BatchEasyHardMiner(EASY, HARD) returns aligned (a, p, a, n)
            mat = self.distance(embeddings, ref_emb)
            s_ap, s_an = mat[a, p], mat[a, n]
            hard = (s_an > s_ap) | (s_an > 0.8)
            easy = (s_an < s_ap) & (s_an < 0.8)
            per = torch.where(hard, s_an, F.softplus((s_an - s_ap) / 0.1))
            counted = hard | easy
            loss = torch.where(counted, per, torch.zeros_like(per)).sum() / counted.sum().clamp(min=1)
            return {"loss": {"losses": loss, "indices": None, "reduction_type": "already_reduced"}}

    if task.startswith("sct"):
        miner = BatchEasyHardMiner(pos_strategy=BatchEasyHardMiner.EASY, neg_strategy=BatchEasyHardMiner.HARD,
                                   distance=CosineSimilarity())
        loss_fn = PMLSCTLoss(distance=CosineSimilarity())
    else:
        miner = BatchEasyHardMiner(pos_strategy=BatchEasyHardMiner.EASY, neg_strategy=BatchEasyHardMiner.HARD)
        loss_fn = TripletMarginLoss(margin=0.2)

    def step(x, labels):
        return loss_fn(x, labels, miner(x, labels))

    return step


def ours_step(task):
    import torch.nn.functional as F

    from hardneg.criterion import Criterion
    from hardneg.losses import MarginTripletLoss, NCALoss, SCTLoss
    from hardneg.mining import TripletMiner

    if task.startswith("sct"):
        criterion = Criterion(SCTLoss(), TripletMiner("easy", "hardest"))
    elif task.startswith("nca"):
        criterion = Criterion(NCALoss(), TripletMiner("easy", "semihard"))
    else:  # PML's TripletMarginLoss averages over non-zero triplets
        criterion = Criterion(MarginTripletLoss(0.2, "euclidean", "nonzero"), TripletMiner("easy", "hardest"))

    def step(x, labels):
        return criterion(F.normalize(x, dim=1), labels)[0]

    return step


def build(task, variant):
    if variant == "shared":
        import torch.nn.functional as F

        return lambda x, labels: F.normalize(x, dim=1).sum()
    if variant == "ours":
        return ours_step(task)
    if variant == "official":
        return official_step("sct" if task.startswith("sct") else "shn")
    return pml_step(task)


