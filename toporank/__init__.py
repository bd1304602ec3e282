"""TopoRank: training-free ranking of 3D medical foundation encoders."""

__version__ = "0.1.0"
