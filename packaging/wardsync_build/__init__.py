"""Build tools for WardSync's bundle and installers (run by `packaging/build.py`).

Not part of the application: nothing under `desktop/` imports it. The directory is named
`wardsync_build` rather than `packaging` so it never shadows the PyPI `packaging` library.
"""
