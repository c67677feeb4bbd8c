"""Label rasters to polygons: seam-exact polygonising, seam merging, GeoPackage writing and styles."""
