"""The one version source (packaging, `wardsync --version` and the About box read it)."""

__version__ = "0.1.0"
