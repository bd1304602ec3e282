"""Validation benchmark: does TopoRank's ranking of encoders agree with fine-tuned Dice on held tasks?"""
