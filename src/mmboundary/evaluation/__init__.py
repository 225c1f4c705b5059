"""mmboundary.evaluation."""
