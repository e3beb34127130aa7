"""Losses: triplet losses over (S_ap, S_an); pair/proxy baselines over (sim, labels)."""
from hardneg.losses.base import TripletLoss
from hardneg.losses.nca import NCALoss, nca_triplet
from hardneg.losses.sct import SCTLoss, sct_loss

__all__ = ["TripletLoss", "NCALoss", "nca_triplet", "SCTLoss", "sct_loss"]
