"""Where a run's numbers and pictures go besides metrics.json: TensorBoard (`board`)."""
