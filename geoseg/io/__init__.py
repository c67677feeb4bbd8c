"""Reading and writing rasters: input scenes, the Zarr label store, GIS exports, atomic file writes."""
