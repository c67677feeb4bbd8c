"""Internal compiled loops and per-worker caches; not public API (their callers are in ``accuracy``)."""
