"""mmboundary.confidence."""
