"""Latency models for the new-shape spaces (cells.py: the darts cell table)."""
