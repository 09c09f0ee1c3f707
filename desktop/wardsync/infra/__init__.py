"""Settings, paths, logging and the metrics log."""
