"""Pure-math transferability scoring: MST, sampling, GRTD, LBTC, fusion, baselines, evaluation.

Nothing here imports web, database or task-queue code; torch is optional (GPU MST path only).
"""
