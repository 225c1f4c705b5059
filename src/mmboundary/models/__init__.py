"""mmboundary.models."""
