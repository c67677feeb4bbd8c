"""Running jobs: job files, the Dask cluster, the workflow, monitoring, the run record and the demo."""
