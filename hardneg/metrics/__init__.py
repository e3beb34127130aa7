"""Retrieval evaluation that scales: one exact chunked ranking pass (``Ranking``), and Recall@K,
MAP@R, R-Precision and NMI read off it, in bounded memory."""

from hardneg.metrics.clustering import kmeans, nmi, nmi_kmeans
from hardneg.metrics.knn import BACKENDS, knn
from hardneg.metrics.ranking import Ranking, rank
from hardneg.metrics.retrieval import check_ks, metrics_from_ranking, retrieval_metrics

__all__ = ["BACKENDS", "Ranking", "check_ks", "kmeans", "knn", "metrics_from_ranking", "nmi", "nmi_kmeans", "rank",
           "retrieval_metrics"]
