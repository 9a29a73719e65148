"""One module per lesson declaring its checkpoints and parts (see grader.weights.spec)."""
