"""The stored package resolution of a guest variant is keyed by everything that decides it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_dtsvirt import guest
from pytest_dtsvirt.guest import apt, build, variants

LISTS = ["DPDK_PROGRAMS_PACKAGE", "DPDK_BUILD_ONLY", "DPDK_PLUGINS", "DPDK_LIBGCC"]


@pytest.mark.parametrize("name", LISTS)
def test_key_changes_with_each_dpdk_list(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    before = variants.resolution_key(["base"], ("x",), True)
    plain = variants.resolution_key(["base"], ("x",), False)
    value = getattr(variants, name)
    edited = (*value, "librte-extra23") if isinstance(value, tuple) else value + "-other"
    monkeypatch.setattr(variants, name, edited)
    assert variants.resolution_key(["base"], ("x",), True) != before
    # the base variant does not take the DPDK lists: its key stays
    assert variants.resolution_key(["base"], ("x",), False) == plain


@pytest.mark.parametrize(("a", "b"), [
    ((["base"], (), False), (["base"], (), True)),
    ((["base"], (), False), (["base", "more"], (), False)),
    ((["base"], (), False), (["base"], ("extra",), False)),
    ((["base"], ("extra",), False), (["base", "extra"], (), False)),
])
def test_key_tells_requests_apart(a: tuple[list[str], tuple[str, ...], bool],
                                  b: tuple[list[str], tuple[str, ...], bool]) -> None:
    assert variants.resolution_key(*a) != variants.resolution_key(*b)


def test_key_is_stable_and_order_free() -> None:
    assert variants.resolution_key(["a", "b"], ("y", "x"), True) == \
        variants.resolution_key(["b", "a"], ("x", "y"), True)


class Built(Exception):
    """Stands for the image build: the resolution step is what is under test."""


def test_editing_dpdk_plugins_resolves_again(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, ...]] = []

    def resolve(names: list[str], extra: tuple[str, ...], dpdk: bool,
                arch: str) -> variants.Resolution:
        calls.append(variants.DPDK_PLUGINS)
        return variants.Resolution({}, frozenset())

    def no_build(*args: object) -> None:
        raise Built

    monkeypatch.setattr(apt, "apt_state_fingerprint", lambda: "lists")  # apt's lists stay
    monkeypatch.setattr(apt, "native_arch", lambda: "amd64")
    monkeypatch.setattr(variants, "resolve", resolve)
    monkeypatch.setattr(build, "build", no_build)
    for _ in range(2):
        with pytest.raises(Built):
            guest.ensure_guest_image(str(tmp_path), dpdk=True)
    assert len(calls) == 1  # the second call reused the stored resolution
    monkeypatch.setattr(variants, "DPDK_PLUGINS", (*variants.DPDK_PLUGINS, "librte-new23"))
    with pytest.raises(Built):
        guest.ensure_guest_image(str(tmp_path), dpdk=True)
    assert len(calls) == 2 and "librte-new23" in calls[1]
