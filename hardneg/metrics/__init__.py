"""Retrieval evaluation that scales: exact chunked kNN (torch or faiss), Recall@K, MAP@R,
R-Precision and NMI in bounded memory, and a DDP-correct torchmetrics ``Metric``."""

from hardneg.metrics.clustering import kmeans, nmi, nmi_kmeans
from hardneg.metrics.knn import BACKENDS, knn
from hardneg.metrics.retrieval import retrieval_metrics

__all__ = ["BACKENDS", "RetrievalMetric", "kmeans", "knn", "nmi", "nmi_kmeans", "retrieval_metrics"]


def __getattr__(name):
    # Imported on first use: torchmetrics costs ~3 s and ~300 MB of resident libraries, which
    # plain retrieval_metrics / knn users (scripts, benchmarks) do not need.
    if name == "RetrievalMetric":
        from hardneg.metrics.metric import RetrievalMetric

        return RetrievalMetric
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
