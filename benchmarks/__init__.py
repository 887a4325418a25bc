"""Benchmarks (`make bench`): each prints its figure and its ratio to a raw ceiling measured in the same run."""
