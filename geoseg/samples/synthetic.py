"""Seeded synthetic scenes with a known reference, so every workflow can be tried and scored offline.

Two kinds of scene are generated:

``landcover``
    A 10 m, 4-band (blue, green, red, nir) satellite-like tile in EPSG:32633 with cropland
    parcels, forest, water, grassland, built-up and bare land (``LANDCOVER_CLASSES``), a
    nodata corner wedge, and a layer of district polygons for per-region statistics.
``cropweed``
    A 1 cm, 4-band (red, green, blue, nir) drone-like orthomosaic in EPSG:32632 with crop rows,
    weeds mostly between the rows and textured soil (``CROPWEED_CLASSES``), and a layer of plots.
    Crop and weed share nearly the same spectra, so only spatial context (the rows) separates them.

Scenes of up to 20,000 × 20,000 pixels are written window by window and never held in memory
whole: every pixel is a pure function of its global coordinates and the seed (hashed-lattice
value noise, jittered-grid Voronoi cells, row geometry), so windows agree across their borders
and the result does not depend on the window size. Class proportions of the land-cover scene
are calibrated once on a coarse, block-independent sample of the same functions.

The code lives in :mod:`.noise` (hashing, value noise, cells), :mod:`.generator` (the base of a
scene kind), :mod:`.landcover`, :mod:`.cropweed` and :mod:`.files` (:func:`make_scene` and the
writers); this module is the stable entry point.
"""

from geoseg.samples.files import KINDS, MAX_SIDE, SceneFiles, make_scene

__all__ = ["KINDS", "MAX_SIDE", "SceneFiles", "make_scene"]
