"""mmboundary.text."""
