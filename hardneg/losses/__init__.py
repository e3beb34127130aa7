"""Losses: triplet losses over (S_ap, S_an); pair/proxy baselines over (sim, labels)."""
from hardneg.losses.base import PairLoss, TripletLoss
from hardneg.losses.contrastive import ContrastiveLoss
from hardneg.losses.margin import MarginTripletLoss
from hardneg.losses.multi_similarity import MultiSimilarityLoss
from hardneg.losses.nca import NCALoss, nca_triplet
from hardneg.losses.proxy_anchor import ProxyAnchorLoss
from hardneg.losses.sct import SCTLoss, sct_loss

__all__ = [
    "TripletLoss",
    "PairLoss",
    "NCALoss",
    "nca_triplet",
    "SCTLoss",
    "sct_loss",
    "MarginTripletLoss",
    "ContrastiveLoss",
    "MultiSimilarityLoss",
    "ProxyAnchorLoss",
]
