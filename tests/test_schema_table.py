"""The schema table is the one source of each VM option and is checked when imported (pure)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pytest_dtsvirt.config import build
from pytest_dtsvirt.config.kinds import Int, Kind
from pytest_dtsvirt.config.model import Disk, Mem, Nic, VmSpec
from pytest_dtsvirt.config.schema import (
    PARAMS,
    Opt,
    ParamSchema,
    check_table,
    params,
    qemu_props,
)
from pytest_dtsvirt.config.validate import Report
from pytest_dtsvirt.errors import Location


def test_an_option_kind_the_validator_does_not_know_is_refused() -> None:
    with pytest.raises(TypeError, match=r"kind 'int' is not a config\.kinds\.Kind"):
        Opt("size", "size in MB", "int")  # type: ignore[arg-type]


def test_a_default_its_kind_refuses_is_refused() -> None:
    with pytest.raises(TypeError, match="option size: default '8' is not an integer 16-64"):
        Opt("size", "size in MB", Int(16, 64), default="8")


def test_an_option_must_fill_a_field_of_its_model() -> None:
    bad = ParamSchema("mem", "memory", (Opt("sise", "typo", Int(16, 64)),), model=Mem,
                      spec_field="mem")
    with pytest.raises(TypeError, match="option sise: Mem has no field 'sise'"):
        check_table((bad,))
    with pytest.raises(TypeError, match="spec_field 'memory' is not a VmSpec field"):
        check_table((replace(bad, options=(), spec_field="memory"),))


def test_a_default_must_agree_with_the_model() -> None:
    bad = ParamSchema("mem", "memory", (Opt("size", "MB", Int(16, 64), default="32",
                                            field="size_mb"),), model=Mem, spec_field="mem")
    with pytest.raises(TypeError, match=r"default '32' disagrees with Mem.size_mb=512"):
        check_table((bad,))


def test_the_real_table_is_consistent() -> None:
    check_table(params())
    for p in params():
        for variant in [*p.variants] or [None]:
            for o in p.options_for(variant):
                assert isinstance(o.kind, Kind), (p.key, o.name)


def test_options_with_a_qemu_property_are_emitted_in_table_order() -> None:
    disk = Disk(file="/a", format="raw", interface="virtio", index=2, media=None)
    assert qemu_props(disk) == [("format", "raw"), ("if", "virtio"), ("index", 2),
                                ("media", None)]
    assert qemu_props(Nic(name="n", mac="52:54:00:00:00:01")) == [
        ("id", "n"), ("mac", "52:54:00:00:00:01"), ("addr", None), ("vectors", None)]


def test_a_new_option_is_one_table_line() -> None:
    """An option added to a parameter's tuple is validated, converted and reaches its model
    field without any other code (here mem's size under a second name)."""
    mem = PARAMS["mem"]
    extra = Opt("megabytes", "size in MB", Int(16, 64), field="size_mb")
    param = replace(mem, options=(*mem.options, extra))
    assert extra.kind.check("65") == "'65' is not an integer 16-64"
    spec = build.generic(param, [({"megabytes": "48", "hugepage": "no"}, Location())],
                         VmSpec("vm0"), Report([], []))
    assert spec.mem == Mem(size_mb=48)
