"""The disk image's layout and boot sector (pure code of guest/disk.py)."""

from __future__ import annotations

import struct

import pytest

from pytest_dtsvirt.errors import GuestImageError
from pytest_dtsvirt.guest.disk import DATA_ARG, MIB, layout, mbr, syslinux_cfg


def test_layout_is_mib_aligned_with_room_for_the_boot_files() -> None:
    lay = layout(30 * MIB + 5, data_mib=64)
    assert lay.boot_start == MIB and lay.boot_size % MIB == 0
    assert lay.boot_size >= 30 * MIB + 8 * MIB
    assert lay.data_start == lay.boot_start + lay.boot_size and lay.data_size == 64 * MIB
    assert lay.total == lay.data_start + 64 * MIB


def test_mbr_has_the_code_an_active_fat_partition_and_a_linux_one() -> None:
    lay = layout(10 * MIB)
    sector = mbr(b"\xfa" * 440, lay, 0x12345678)
    assert len(sector) == 512 and sector[:440] == b"\xfa" * 440
    assert sector[510:] == b"\x55\xaa"
    assert struct.unpack_from("<I", sector, 440)[0] == 0x12345678
    entries = [struct.unpack_from("<B3sB3sII", sector, 446 + 16 * i) for i in range(4)]
    assert entries[0][0] == 0x80 and entries[0][2] == 0x06
    assert (entries[0][4], entries[0][5]) == (lay.boot_start // 512, lay.boot_size // 512)
    assert entries[1][0] == 0 and entries[1][2] == 0x83
    assert (entries[1][4], entries[1][5]) == (lay.data_start // 512, lay.data_size // 512)
    assert sector[446 + 32:510] == bytes(32)
    with pytest.raises(GuestImageError, match="more than 440"):
        mbr(b"\0" * 441, lay, 0)


def test_syslinux_cfg_asks_init_for_the_data_partition() -> None:
    cfg = syslinux_cfg("console=ttyS0 quiet")
    assert "LINUX /vmlinuz" in cfg and "INITRD /initrd.img" in cfg
    assert f"APPEND console=ttyS0 quiet {DATA_ARG}\n" in cfg and "PROMPT 0" in cfg
