"""Spectral analysis of snapshots and weight surgery."""
