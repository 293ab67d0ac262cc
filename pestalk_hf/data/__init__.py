"""Datasets: the 3D-EmoStyle schema, its builders (videos, EmoStyle-Synth) and training loaders."""
