"""TopoRank HTTP API (FastAPI). Never imports torch: checkpoints are loaded by the worker."""
