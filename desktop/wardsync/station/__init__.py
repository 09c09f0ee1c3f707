"""The headless workstation: what one signed-in process owns, composed without a widget.

`AppServices` builds the backend and the signed-in user's session (sync stack, alerts,
presence, edits, audit); `Workspace` is what the windows of that session share. Nothing here
imports PySide6, qasync or `wardsync.ui` (import-linter), so benchmarks and tools build whole
stations headless and the Qt package only adds windows on top (docs/architecture.md §1).
"""
