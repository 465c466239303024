"""Evaluation: embedding and scoring trials, EER/minDCF, plots."""
