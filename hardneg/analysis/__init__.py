"""Triplet-space analysis: diagrams, gradient fields, collapse diagnostics, retrieval grids.

Plain functions over tensors (no Lightning): callbacks call them during training and
``python -m hardneg.analyze`` calls them on a finished run's saved data.
"""
