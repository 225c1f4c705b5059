"""mmboundary.data."""
