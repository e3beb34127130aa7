"""Lightning callbacks that turn the triplet-space analysis into figures, scalars and warnings."""
from hardneg.callbacks.collapse import CollapseDetector
from hardneg.callbacks.retrieval_examples import RetrievalExamplesCallback
from hardneg.callbacks.triplet_space import TripletSpaceCallback

__all__ = ["CollapseDetector", "RetrievalExamplesCallback", "TripletSpaceCallback"]
