"""mmboundary: MMBoundary (ACL 2025) step-level confidence calibration for vision-language models.

Importing the package is cheap; heavy libraries load inside the functions that need them.
"""

__version__ = "0.1.0"
