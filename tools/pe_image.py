"""Just enough of the PE/COFF format for the wheel build: the export list of a DLL (to generate an import library
for another architecture) and the timestamps a linker writes (zeroed, so that a rebuild gives the same bytes).

Layout facts from the PE format specification: the offset of the "PE\\0\\0" signature is at 0x3C; the COFF header
follows it (Machine, NumberOfSections, TimeDateStamp, ..., SizeOfOptionalHeader); the optional header holds the
CheckSum at 64 and the data directories (export = 0, debug = 6) at 96 (PE32) or 112 (PE32+)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

SCN_MEM_EXECUTE = 0x20000000
MACHINES = {0x8664: "amd64", 0xAA64: "arm64", 0x14C: "x86", 0x1C4: "arm"}


@dataclass
class Section:
    name: str
    rva: int
    size: int
    offset: int
    flags: int


class Image:
    def __init__(self, data: bytes | bytearray) -> None:
        self.data = bytearray(data)
        if self.data[:2] != b"MZ":
            raise ValueError("not a PE image (no MZ header)")
        (self.pe,) = struct.unpack_from("<I", self.data, 0x3C)
        if self.data[self.pe:self.pe + 4] != b"PE\0\0":
            raise ValueError("not a PE image (no PE signature)")
        self.coff = self.pe + 4
        self.machine, nsections, _, _, _, opt_size, _ = struct.unpack_from("<HHIIIHH", self.data, self.coff)
        self.opt = self.coff + 20
        (magic,) = struct.unpack_from("<H", self.data, self.opt)
        self.dirs = self.opt + (112 if magic == 0x20B else 96)
        self.sections = []
        for i in range(nsections):
            at = self.opt + opt_size + 40 * i
            name, vsize, rva, raw_size, raw_offset = struct.unpack_from("<8sIIII", self.data, at)
            (flags,) = struct.unpack_from("<I", self.data, at + 36)
            self.sections.append(Section(name.rstrip(b"\0").decode("ascii", "replace"), rva, max(vsize, raw_size),
                                         raw_offset, flags))

    @classmethod
    def read(cls, path: Path) -> "Image":
        return cls(path.read_bytes())

    def directory(self, index: int) -> tuple[int, int]:
        return struct.unpack_from("<II", self.data, self.dirs + 8 * index)

    def section_of(self, rva: int) -> Section | None:
        return next((s for s in self.sections if s.rva <= rva < s.rva + s.size), None)

    def offset(self, rva: int) -> int:
        s = self.section_of(rva)
        if s is None:
            raise ValueError(f"RVA {rva:#x} is in no section")
        return s.offset + rva - s.rva

    def cstring(self, rva: int) -> str:
        at = self.offset(rva)
        return bytes(self.data[at:self.data.index(b"\0", at)]).decode("ascii")

    def exports(self) -> list[tuple[str, bool]]:
        """(name, is_data) of every named export; data: its address is in a section that is not executable."""
        rva, size = self.directory(0)
        if rva == 0:
            return []
        at = self.offset(rva)
        _, _, _, _, _, _, _, n_names, funcs, names, ordinals = struct.unpack_from("<IIHHIIIIIII", self.data, at)
        out = []
        for i in range(n_names):
            (name_rva,) = struct.unpack_from("<I", self.data, self.offset(names) + 4 * i)
            (ordinal,) = struct.unpack_from("<H", self.data, self.offset(ordinals) + 2 * i)
            (target,) = struct.unpack_from("<I", self.data, self.offset(funcs) + 4 * ordinal)
            if rva <= target < rva + size:  # a forwarder string, not an address
                out.append((self.cstring(name_rva), False))
                continue
            section = self.section_of(target)
            out.append((self.cstring(name_rva), section is None or not section.flags & SCN_MEM_EXECUTE))
        return out

    def timestamps(self) -> dict[str, int]:
        """Every TimeDateStamp a linker writes: the COFF header's, the export directory's, each debug entry's."""
        found = {"coff": struct.unpack_from("<I", self.data, self.coff + 4)[0]}
        rva, _ = self.directory(0)
        if rva:
            found["export"] = struct.unpack_from("<I", self.data, self.offset(rva) + 4)[0]
        rva, size = self.directory(6)
        for i in range(size // 28 if rva else 0):
            found[f"debug{i}"] = struct.unpack_from("<I", self.data, self.offset(rva) + 28 * i + 4)[0]
        return found

    def zero_timestamps(self) -> None:
        struct.pack_into("<I", self.data, self.coff + 4, 0)
        rva, _ = self.directory(0)
        if rva:
            struct.pack_into("<I", self.data, self.offset(rva) + 4, 0)
        rva, size = self.directory(6)
        for i in range(size // 28 if rva else 0):
            struct.pack_into("<I", self.data, self.offset(rva) + 28 * i + 4, 0)
        if struct.unpack_from("<I", self.data, self.opt + 64)[0]:
            struct.pack_into("<I", self.data, self.opt + 64, self.checksum())

    def checksum(self) -> int:
        """The PE checksum (the 16-bit one's-complement sum of the file with the CheckSum field as zero, plus the
        file's length)."""
        data = bytes(self.data[:self.opt + 64]) + b"\0\0\0\0" + bytes(self.data[self.opt + 68:])
        if len(data) % 2:
            data += b"\0"
        total = 0
        for (word,) in struct.iter_unpack("<H", data):
            total += word
            total = (total & 0xFFFF) + (total >> 16)
        return (total & 0xFFFF) + len(self.data)


def def_file(dll: Path) -> str:
    """A module-definition file listing the DLL's named exports (DATA for those outside executable sections)."""
    lines = [f"LIBRARY {dll.name}", "EXPORTS"]
    for name, is_data in sorted(Image.read(dll).exports()):
        lines.append(f"    {name}{' DATA' if is_data else ''}")
    return "\n".join(lines) + "\n"


def zero_timestamps(path: Path) -> None:
    image = Image.read(path)
    image.zero_timestamps()
    path.write_bytes(bytes(image.data))
