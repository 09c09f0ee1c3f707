"""The settings schema: every configuration key, declared once (name, type, default, meaning).

Defaults shared with the sync stack come from `core.defaults`, so the schema and the
workstation cannot drift apart (docs/architecture.md §3, configuration layering).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from wardsync.core import defaults
from wardsync.core.alerts import DEFAULT_ESCALATION_AFTER_S
from wardsync.core.critical import CriticalLimits
from wardsync.infra.settings_types import (
    BOOL,
    CRITICAL_LIMITS,
    FLOAT,
    INT,
    OPTIONAL_PATH,
    OPTIONAL_STR,
    STR,
    STR_LIST,
    ValueType,
    at_least,
    between,
    browser_command,
    choice,
    existing_file,
    fhir_id,
    http_url,
    non_empty,
    non_negative,
    oauth_scopes,
    positive,
    realtime_endpoint,
)

ENV_PREFIX = "WARDSYNC_"
# docs/architecture.md §5: critical results must reach a clinician in under an hour at most.
MAX_ESCALATION_AFTER_MIN = 60.0
# A shared workstation must lock; an hour is the longest idle time a site may choose.
MAX_IDLE_LOCK_MIN = 60.0
# Vital-sign window: more than 6 minutes (a demo of memory staying level) up to four weeks.
MIN_VITALS_HOURS, MAX_VITALS_HOURS = 0.1, 672.0
# Polling more often than this loads the FHIR server for no clinical gain.
MIN_POLLING_INTERVAL_S = 1.0

# The narrow SMART App Launch v2 scopes the desktop needs (read/search what it shows, update
# Task status, create Communication and AuditEvent for acknowledgements). Never user/*.*.
DEFAULT_SCOPES: tuple[str, ...] = (
    "openid",
    "fhirUser",
    "offline_access",
    "user/Patient.rs",
    "user/AllergyIntolerance.rs",
    "user/Observation.rs",
    "user/Observation.c",  # nursing notes
    "user/Observation.u",
    "user/DiagnosticReport.rs",
    "user/Encounter.rs",
    "user/Location.rs",
    "user/Condition.rs",
    "user/Immunization.rs",
    "user/MedicationRequest.rs",
    "user/Task.rs",
    "user/Task.c",  # escalation of unacknowledged critical results
    "user/Task.u",
    "user/Communication.rs",
    "user/Communication.c",
    "user/Practitioner.rs",
    "user/AuditEvent.c",
)



@dataclass(frozen=True, slots=True)
class Setting:
    """One configuration key: its dotted name, type, default, meaning and checks.

    `secret` values are never printed (`config show` masks them). `tls_checked` URLs must
    use https/wss for non-loopback hosts while `security.require_tls` is true.
    """

    name: str
    type: ValueType
    default: Any
    description: str
    validate: Callable[[Any], None] | None = None
    secret: bool = False
    tls_checked: bool = False

    @property
    def env_var(self) -> str:
        """`WARDSYNC_` + the name upper-cased with `.` -> `_` (e.g. WARDSYNC_FHIR_BASE_URL)."""
        return ENV_PREFIX + self.name.upper().replace(".", "_")

    def parse_toml(self, value: object) -> Any:
        """Read and validate a value from a TOML file; raises InvalidValue."""
        return self._checked(self.type.from_toml(value))

    def parse_text(self, text: str) -> Any:
        """Read and validate a value from the environment or command line; raises InvalidValue."""
        return self._checked(self.type.from_text(text))

    def _checked(self, value: Any) -> Any:
        if self.validate is not None:
            self.validate(value)
        return value


SETTINGS: tuple[Setting, ...] = (
    Setting("fhir.base_url", OPTIONAL_STR, None,
            "FHIR R4 base URL of the hospital's server; unset = run on the embedded sandbox "
            "with synthetic data (a permanent DEMO marker is shown).",
            http_url, tls_checked=True),
    Setting("fhir.timeout_s", FLOAT, defaults.FHIR_TIMEOUT_S,
            "Seconds before a FHIR request is abandoned and retried with backoff.", positive),
    Setting("fhir.ca_bundle", OPTIONAL_PATH, None,
            "PEM file of a hospital CA, trusted besides the public CAs for FHIR, sign-in and "
            "realtime-token requests.",
            existing_file),
    Setting("auth.client_id", STR, "wardsync-desktop",
            "OAuth client id registered with the hospital's SMART authorization server.",
            non_empty),
    Setting("auth.scopes", STR_LIST, DEFAULT_SCOPES,
            "SMART scopes requested at login: the narrow set the desktop needs.", oauth_scopes),
    Setting("auth.browser", STR_LIST, (),
            "Program and arguments that open the sign-in page, run without a shell, %s "
            "standing for its address (added last when absent), e.g. [\"firefox\", "
            "\"--new-window\", \"%s\"]; empty = the system's default browser.",
            browser_command),
    Setting("realtime.token_url", OPTIONAL_STR, None,
            "URL that exchanges the FHIR access token for a short-lived realtime token: the "
            "WardSync relay's token_url (docs/relay.md); unset = the demo sandbox's, or no "
            "realtime (polling) on a hospital server.", http_url, tls_checked=True),
    Setting("realtime.endpoint", OPTIONAL_STR, None,
            "Realtime hub as host[:port] (TLS unless loopback) or a ws(s):// URL; "
            "unset = the demo sandbox's hub, or no realtime (polling) on a hospital server.",
            realtime_endpoint, tls_checked=True),
    Setting("realtime.ward", OPTIONAL_STR, None,
            "Ward (FHIR Location id) whose channel ward:<id> this workstation follows; "
            "unset = chosen at login.", fhir_id),
    Setting("sync.polling_interval_s", FLOAT, defaults.POLLING_INTERVAL_S,
            "Seconds between watchdog polls while realtime is down (degraded: polling).",
            at_least(MIN_POLLING_INTERVAL_S)),
    Setting("sync.degraded_after_s", FLOAT, defaults.DEGRADED_AFTER_S,
            "Seconds without a working realtime connection before windows show degraded.",
            positive),
    Setting("sync.pull_debounce_ms", INT, defaults.PULL_DEBOUNCE_MS,
            "Milliseconds to coalesce pokes for the same query into one pull.", non_negative),
    Setting("sync.gap_grace_s", FLOAT, defaults.SEQ_GAP_GRACE_S,
            "Seconds to wait for a missing poke sequence number before a catch-up pull.",
            non_negative),
    Setting("sync.backoff_cap_s", FLOAT, defaults.BACKOFF_CAP_S,
            "Longest wait in seconds between retries of a failing pull (exponential backoff).",
            positive),
    Setting("alerts.critical_limits", CRITICAL_LIMITS, CriticalLimits(),
            "Site critical limits keyed by LOINC code: {low, high, unit, name}; a code listed "
            "here replaces the built-in limit for that test (core.critical "
            "DEFAULT_CRITICAL_LIMITS.merged); empty = the built-in table.", None),
    # The relay's `alerts.escalation_after_min` default comes from the same constant.
    Setting("alerts.escalation_after_min", FLOAT, DEFAULT_ESCALATION_AFTER_S / 60.0,
            "Minutes an unacknowledged critical alert waits before escalating (at most 60).",
            between(0.0, MAX_ESCALATION_AFTER_MIN)),
    Setting("alerts.sound", BOOL, True, "Play a sound when a critical alert is raised."),
    Setting("alerts.sound_mutable", BOOL, False,
            "May the user mute the alert sound from the alerts panel."),
    Setting("security.idle_lock_min", FLOAT, 10.0,
            "Minutes without input before the workstation session locks (at most 60).",
            between(0.0, MAX_IDLE_LOCK_MIN)),
    Setting("security.edit_lock_idle_min", FLOAT, 2.0,
            "Minutes without activity after which a record edit lock is released (others "
            "may then edit; the holder is told).", between(0.0, MAX_IDLE_LOCK_MIN)),
    Setting("security.require_tls", BOOL, True,
            "Refuse http:// and ws:// URLs to non-loopback hosts (https/wss only)."),
    Setting("ui.vitals_window_h", FLOAT, 72.0,
            "Hours of vital signs each workstation fetches and keeps in memory (older readings "
            "are dropped; the charts show the 24 h ending at the latest reading).",
            between(MIN_VITALS_HOURS, MAX_VITALS_HOURS)),
    Setting("ui.theme", choice("light", "high-contrast"), "light",
            "Window theme: light, or high-contrast for bright wards and low vision."),
    Setting("logging.level", choice("DEBUG", "INFO", "WARNING", "ERROR"), "INFO",
            "Lowest level written to the application log (never clinical content)."),
    Setting("metrics.log", OPTIONAL_PATH, None,
            "Append JSON-lines metrics to this file (docs/architecture.md §3.4); "
            "WARDSYNC_METRICS_LOG is the documented contract.", None),
)
SETTINGS_BY_NAME: Mapping[str, Setting] = MappingProxyType({s.name: s for s in SETTINGS})
REQUIRE_TLS_KEY = "security.require_tls"
