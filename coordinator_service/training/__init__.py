"""The coordinator's training side: epoch planning, the torch step, the aggregator loop."""
