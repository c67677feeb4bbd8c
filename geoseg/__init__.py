"""geoseg: segment large satellite and drone imagery at scale with Dask.

The library is plain functions on files, numpy arrays and xarray objects; the CLI and
job files are thin layers over it. Start with :func:`geoseg.io.open_scene`,
:func:`geoseg.workflow.run_job` and :func:`geoseg.labelstore.open_labels`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .errors import GeosegError

try:
    __version__ = version("geoseg")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["GeosegError", "__version__"]
