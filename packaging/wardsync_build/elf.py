"""The shared libraries an ELF file names in its dynamic section (DT_NEEDED).

Enough of the ELF format (System V ABI, "Object Files" chapter: ELF header, section header
table, the SHT_DYNAMIC section and its linked string table) to list DT_NEEDED entries without
binutils, so pruning the bundle does not depend on `readelf` being installed.
"""

from __future__ import annotations

import struct
from pathlib import Path

ELF_MAGIC = b"\x7fELF"
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
ELFDATA2MSB = 2
SHT_DYNAMIC = 6
DT_NULL = 0
DT_NEEDED = 1


class NotElfError(ValueError):
    """The file is not an ELF object (or is truncated)."""


def is_elf(path: Path) -> bool:
    """True if `path` starts with the ELF magic number."""
    try:
        with path.open("rb") as fh:
            return fh.read(4) == ELF_MAGIC
    except OSError:
        return False


def needed_libraries(path: Path) -> list[str]:
    """The DT_NEEDED sonames of `path`, in file order; [] for a static ELF file.

    Raises NotElfError if `path` is not a well-formed ELF file.
    """
    data = path.read_bytes()
    if data[:4] != ELF_MAGIC or len(data) < 64:
        raise NotElfError(f"{path}: not an ELF file")
    elf_class, byte_order = data[4], data[5]
    if elf_class not in (ELFCLASS32, ELFCLASS64) or byte_order not in (ELFDATA2LSB, ELFDATA2MSB):
        raise NotElfError(f"{path}: unknown ELF class or byte order")
    end = "<" if byte_order == ELFDATA2LSB else ">"
    wide = elf_class == ELFCLASS64
    try:
        if wide:
            shoff, = struct.unpack_from(end + "Q", data, 0x28)
            shentsize, shnum = struct.unpack_from(end + "HH", data, 0x3A)
            section = struct.Struct(end + "IIQQQQIIQQ")  # Elf64_Shdr
            dyn = struct.Struct(end + "qQ")  # Elf64_Dyn
        else:
            shoff, = struct.unpack_from(end + "I", data, 0x20)
            shentsize, shnum = struct.unpack_from(end + "HH", data, 0x2E)
            section = struct.Struct(end + "IIIIIIIIII")  # Elf32_Shdr
            dyn = struct.Struct(end + "iI")  # Elf32_Dyn
        headers = [section.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
    except struct.error as exc:
        raise NotElfError(f"{path}: truncated section headers") from exc

    needed: list[str] = []
    for header in headers:
        sh_type, sh_offset, sh_size, sh_link = header[1], header[4], header[5], header[6]
        if sh_type != SHT_DYNAMIC:
            continue
        strtab_offset = headers[sh_link][4]
        for pos in range(sh_offset, sh_offset + sh_size, dyn.size):
            tag, value = dyn.unpack_from(data, pos)
            if tag == DT_NULL:
                break
            if tag == DT_NEEDED:
                start = strtab_offset + value
                needed.append(data[start:data.index(b"\0", start)].decode("utf-8"))
    return needed
