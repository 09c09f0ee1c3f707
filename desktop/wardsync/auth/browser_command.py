"""Sign-in in the browser a site names (`auth.browser`) instead of the system default.

Native apps sign in through an external user agent (RFC 8252 §6). Most workstations open the
system's default browser; a site whose workstations have no usable default (a kiosk profile, a
browser that must run with particular options, a terminal server) names the command instead:
a list of program and arguments, run without a shell, where `%s` stands for the sign-in
address (added as the last argument when no item has it), as Python's `webbrowser` and
xdg-open read `$BROWSER`. The loopback redirect (RFC 8252 §7.3) completes the sign-in
whichever browser loads the page.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Sequence

log = logging.getLogger(__name__)

URL_PLACEHOLDER = "%s"


def browser_argv(command: Sequence[str], url: str) -> list[str]:
    """The program and arguments that open `url` with `command` (see the module doc)."""
    if not command or not command[0].strip():
        raise ValueError("the browser command must name a program")
    if any(URL_PLACEHOLDER in arg for arg in command):
        return [arg.replace(URL_PLACEHOLDER, url) for arg in command]
    return [*command, url]


def open_with_command(command: Sequence[str], url: str) -> bool:
    """Start the browser command for `url`; True when it started (it is not waited for: a
    browser may stay open for hours). False, with a warning naming the program (never the
    address: it carries the request's state), when it could not be started."""
    argv = browser_argv(command, url)
    try:
        # No shell: the site's program with the address as one argument, never re-parsed.
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        log.warning("the sign-in browser %r could not be started: %s", argv[0],
                    exc.strerror or type(exc).__name__)
        return False
    # Reaped when it ends, so a browser that hands the page to a running one and exits at
    # once leaves no zombie behind.
    threading.Thread(target=process.wait, name="sign-in browser", daemon=True).start()
    return True
