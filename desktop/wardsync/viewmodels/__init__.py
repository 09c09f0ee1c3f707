"""What the windows show, computed without Qt: rows, banners, trends, histories, geometry.

Each view model reads the resource store (or plain values) and returns plain data that a Qt
view renders; none imports PySide6, qasync or shiboken6 (import-linter), so they are unit
tested without a display and the windows stay thin (docs/architecture.md §1).
"""
