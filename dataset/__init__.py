"""Datasets: fusion training data (FusionDataset), whole-video test sets (DAVIS, BL30K) and transforms."""
