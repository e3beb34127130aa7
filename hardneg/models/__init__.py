from hardneg.models.embedding import EmbeddingNet
from hardneg.models.pretrained import create_backbone

__all__ = ["EmbeddingNet", "create_backbone"]
