"""mmboundary.annotate."""
