"""GeoParquet regions: read where GDAL has its Parquet driver, else refused in one line that says how to convert
(the GDAL of pyogrio's wheels has none and handed the file to its ADBC driver: "libduckdb.so: cannot open")."""

from __future__ import annotations

import geopandas as gpd
import pyogrio
import pytest
import shapely
from affine import Affine
from rasterio.crs import CRS

from geoseg.accuracy.regions import open_regions
from geoseg.errors import InputError
from geoseg.geo import GeoGrid


def test_geoparquet_regions_are_read_or_refused_with_the_conversion(tmp_path):
    regions = gpd.GeoDataFrame({"region_id": [1, 2]}, crs="EPSG:32633", geometry=[
        shapely.box(500000, 5099000, 500500, 5100000), shapely.box(500500, 5099000, 501000, 5100000)])
    regions.to_parquet(tmp_path / "regions.parquet")
    grid = GeoGrid.of(100, 100, Affine(10, 0, 500000, 0, -10, 5100000), CRS.from_epsg(32633))
    if "Parquet" in pyogrio.list_drivers():
        assert list(open_regions(str(tmp_path / "regions.parquet"), "region_id", grid).ids) == [1, 2]
        return
    with pytest.raises(InputError) as err:
        open_regions(str(tmp_path / "regions.parquet"), "region_id", grid)
    message = str(err.value)
    assert "\n" not in message and "ogr2ogr -f GPKG" in message and "duckdb" not in message.lower()
    # the conversion it names gives a layer geoseg reads
    gpd.read_parquet(tmp_path / "regions.parquet").to_file(tmp_path / "regions.gpkg")
    assert list(open_regions(str(tmp_path / "regions.gpkg"), "region_id", grid).ids) == [1, 2]
