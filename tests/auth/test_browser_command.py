"""`auth.browser`: the site's browser command opens the sign-in page (RFC 8252 §6), a real
child process given the address as one argument, never through a shell."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from wardsync.auth.browser_command import browser_argv, open_with_command
from wardsync.infra.settings import load_settings
from wardsync.infra.settings_types import InvalidValue, browser_command

# A query with the characters a shell would act on: it must arrive as one argument, unchanged.
URL = "http://127.0.0.1:8080/oauth/authorize?response_type=code&state=a;b$(x)&scope=openid%20x"


def test_the_address_replaces_the_placeholder_or_comes_last():
    assert browser_argv(["firefox", "--new-window", "%s"], URL) == [
        "firefox", "--new-window", URL]
    assert browser_argv(["chromium", "--app=%s"], URL) == ["chromium", f"--app={URL}"]
    assert browser_argv(["lynx"], URL) == ["lynx", URL]
    with pytest.raises(ValueError, match="must name a program"):
        browser_argv([], URL)
    with pytest.raises(ValueError, match="must name a program"):
        browser_argv(["  ", URL], URL)


def wait_for_file(path: Path, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} was not written"
        time.sleep(0.02)
    return path.read_text()


def test_the_command_runs_as_a_child_process_with_the_address_as_one_argument(tmp_path):
    out = tmp_path / "opened.txt"
    script = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(sys.argv[2])"
    assert open_with_command([sys.executable, "-c", script, str(out), "%s"], URL) is True
    assert wait_for_file(out) == URL


def test_a_program_that_cannot_start_is_reported_not_raised(tmp_path, caplog):
    missing = str(tmp_path / "no-such-browser")
    assert open_with_command([missing], URL) is False
    assert "no-such-browser" in caplog.text
    assert "state=" not in caplog.text  # the address (its state) is not logged


def test_the_setting_takes_a_toml_array_or_words_and_refuses_a_nameless_program(tmp_path):
    none = tmp_path / "absent.toml"

    def loaded(text: str) -> tuple[str, ...]:
        settings = load_settings(environ={"WARDSYNC_AUTH_BROWSER": text}, policy_path=none,
                                 user_path=none)
        return tuple(settings["auth.browser"])

    assert loaded('["/opt/My Browser/browser", "--kiosk", "%s"]') == (
        "/opt/My Browser/browser", "--kiosk", "%s")
    assert loaded("firefox --new-window") == ("firefox", "--new-window")
    assert loaded("") == ()  # the system's default browser
    with pytest.raises(InvalidValue, match="must name the browser program"):
        browser_command(("", "%s"))
