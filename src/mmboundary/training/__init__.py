"""mmboundary.training."""
