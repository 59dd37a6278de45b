"""The benchmark of the aggregator's pipeline."""
