"""The settings schema and the sync stack start from the same built-in defaults."""

from __future__ import annotations

import dataclasses

import pytest

from wardsync.core import defaults
from wardsync.core.connection_status import DEFAULT_DEGRADED_AFTER_S
from wardsync.fhir.client import DEFAULT_TIMEOUT_S
from wardsync.infra.settings import default_settings
from wardsync.sync.workstation import WorkstationConfig


@pytest.mark.parametrize(("setting", "field", "scale"), [
    ("sync.degraded_after_s", "degraded_after_s", 1.0),
    ("sync.polling_interval_s", "polling_interval_s", 1.0),
    ("sync.gap_grace_s", "gap_grace_s", 1.0),
    ("sync.pull_debounce_ms", "pull_debounce_s", 1000.0),
    ("sync.backoff_cap_s", "backoff_cap_s", 1.0),
    ("fhir.timeout_s", "fhir_timeout_s", 1.0),
])
def test_setting_default_is_the_workstation_default(setting: str, field: str,
                                                    scale: float) -> None:
    config_defaults = {f.name: f.default for f in dataclasses.fields(WorkstationConfig)}
    assert default_settings()[setting] == pytest.approx(config_defaults[field] * scale)


def test_degraded_after_is_one_number() -> None:
    assert default_settings()["sync.degraded_after_s"] == defaults.DEGRADED_AFTER_S
    assert DEFAULT_DEGRADED_AFTER_S == defaults.DEGRADED_AFTER_S
    assert DEFAULT_TIMEOUT_S == defaults.FHIR_TIMEOUT_S
