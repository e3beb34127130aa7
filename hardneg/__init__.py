"""hardneg: hard negatives in deep metric learning."""
__version__ = "0.1.0"
