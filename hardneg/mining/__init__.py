"""In-batch triplet mining: indices only, chosen without gradient."""
from hardneg.mining.miner import TripletMiner
from hardneg.mining.negatives import negative_strategy
from hardneg.mining.positives import positive_strategy
from hardneg.mining.triplets import Triplets, mine_triplets

__all__ = ["TripletMiner", "Triplets", "mine_triplets", "negative_strategy", "positive_strategy"]
