"""Seeded sample scenes (land cover, crop versus weed) for the demo, tests, notebooks and benchmarks."""
