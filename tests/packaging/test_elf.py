"""The ELF DT_NEEDED reader, on Qt's and Python's real shared libraries."""

from __future__ import annotations

import struct
from pathlib import Path

import PySide6
import pytest
from wardsync_build import elf

QT_LIB = Path(PySide6.__file__).parent / "Qt" / "lib"


def test_qt_widgets_needs_qt_gui_core_and_the_c_library():
    needed = elf.needed_libraries(QT_LIB / "libQt6Widgets.so.6")
    assert {"libQt6Gui.so.6", "libQt6Core.so.6", "libc.so.6"} <= set(needed)
    assert "libQt6Widgets.so.6" not in needed


def test_qt_xcb_plugin_needs_the_system_xcb_library():
    plugin = QT_LIB.parent / "plugins" / "platforms" / "libqxcb.so"
    assert "libQt6XcbQpa.so.6" in elf.needed_libraries(plugin)
    assert "libxcb.so.1" in elf.needed_libraries(QT_LIB / "libQt6XcbQpa.so.6")


def test_is_elf_tells_libraries_from_other_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert elf.is_elf(QT_LIB / "libQt6Core.so.6")
    assert not elf.is_elf(text)
    assert not elf.is_elf(tmp_path / "missing.so")


def test_a_file_that_is_not_elf_is_refused(tmp_path):
    path = tmp_path / "fake.so"
    path.write_bytes(b"MZ" + b"\0" * 100)
    with pytest.raises(elf.NotElfError, match="not an ELF file"):
        elf.needed_libraries(path)


def test_a_truncated_elf_is_refused_not_misread(tmp_path):
    path = tmp_path / "cut.so"
    path.write_bytes((QT_LIB / "libQt6Core.so.6").read_bytes()[:64])
    with pytest.raises(elf.NotElfError, match="truncated"):
        elf.needed_libraries(path)


def test_an_elf_without_sections_needs_nothing(tmp_path):
    # A 64-bit little-endian ELF header with no section header table (e_shnum = 0).
    header = bytearray(64)
    header[:6] = elf.ELF_MAGIC + bytes([elf.ELFCLASS64, elf.ELFDATA2LSB])
    struct.pack_into("<HH", header, 0x3A, 64, 0)
    path = tmp_path / "static"
    path.write_bytes(bytes(header))
    assert elf.needed_libraries(path) == []
