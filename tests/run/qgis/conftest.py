"""The probe is run by the system Python that has QGIS, never imported by pytest."""

collect_ignore = ["qgis_probe.py"]
