"""In-batch triplet mining: indices only, chosen without gradient."""
from hardneg.mining.miner import TripletMiner
from hardneg.mining.triplets import Triplets, mine_triplets

__all__ = ["TripletMiner", "Triplets", "mine_triplets"]
