"""Evaluation: link prediction metrics and tables."""
