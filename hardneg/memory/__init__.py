"""Cross-batch memory (XBM, Wang et al., CVPR 2020): mine each batch's anchors against the
batch plus a FIFO bank of recent (detached) embeddings."""
from hardneg.memory.bank import MemoryBank
from hardneg.memory.xbm import CrossBatchMemory

__all__ = ["CrossBatchMemory", "MemoryBank"]
