"""An environment in which the optional sandbox component looks uninstalled.

A directory put first on PYTHONPATH holds an `aiohttp` package whose import fails the way a
missing library does, so a child process sees an install without the `wardsync[sandbox]`
extra while everything else (the app, its other dependencies) stays real.
"""

from __future__ import annotations

import os
from pathlib import Path

STAND_IN = 'raise ModuleNotFoundError("No module named \'aiohttp\'", name="aiohttp")\n'


def env_without_sandbox(tmp_path: Path) -> dict[str, str]:
    """A copy of os.environ for a child process in which `import aiohttp` fails."""
    shadow = tmp_path / "no-sandbox-extra"
    (shadow / "aiohttp").mkdir(parents=True, exist_ok=True)
    (shadow / "aiohttp" / "__init__.py").write_text(STAND_IN)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(shadow), env.get("PYTHONPATH", "")) if p)
    return env
