"""`mmboundary demo`: the whole method on ShapesWorld (see :mod:`mmboundary.demo.run`)."""
