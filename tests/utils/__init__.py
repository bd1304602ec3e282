"""Shared test helpers: brute-force references and row factories, one home each."""
