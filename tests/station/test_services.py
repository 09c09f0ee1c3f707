"""What the station reads from the settings: the sign-in scopes exactly as the site lists
them, and the escalation window (shorter in the demo unless the site set one)."""

from __future__ import annotations

from pathlib import Path

from wardsync.core.metrics import MemoryMetrics
from wardsync.infra.settings import DEFAULT_SCOPES, load_settings
from wardsync.station.services import AppServices
from wardsync.sync.alerts import ALERT_WRITE_SCOPES
from wardsync.sync.edits import EDIT_WRITE_SCOPES


def test_a_site_scope_list_is_used_as_given_and_a_site_window_is_kept(tmp_path: Path) -> None:
    user = tmp_path / "user.toml"
    user.write_text('[auth]\nscopes = ["openid", "user/Task.rs"]\n'
                    '[alerts]\nescalation_after_min = 30.0\n')
    site = load_settings(environ={}, policy_path=tmp_path / "none.toml", user_path=user)
    services = AppServices(site, MemoryMetrics(), demo=True)
    assert services.sign_in_scopes() == ("openid", "user/Task.rs")
    assert services.escalation_after_s() == 1800.0
    default = load_settings(environ={}, policy_path=tmp_path / "none.toml",
                            user_path=tmp_path / "none.toml")
    built_in = AppServices(default, MemoryMetrics(), demo=False)
    scopes = built_in.sign_in_scopes()
    assert scopes == DEFAULT_SCOPES
    # The built-in list covers what acknowledgements, escalations and edits write.
    assert set(ALERT_WRITE_SCOPES) | set(EDIT_WRITE_SCOPES) <= set(scopes)
    assert built_in.escalation_after_s() == 15 * 60.0
