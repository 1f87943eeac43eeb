"""The accelerator policy: KVM when it can work, else TCG with one reason line.

:func:`choose_accel` is pure; :func:`probe` reads ``/proc/cpuinfo`` and ``/proc/misc`` (is
the ``kvm`` device there) through one file-reading callable, so it works the same on this
host and over a remote DUT session.
"""

from __future__ import annotations

from collections.abc import Callable

from pytest_dtsvirt.errors import ConfigError
from pytest_dtsvirt.qemu.placement import Accel

POLICIES = ("auto", "kvm", "tcg")


def choose_accel(policy: str, enable_kvm: bool, has_dev_kvm: bool,
                 cpu_flags: set[str] | frozenset[str]) -> tuple[Accel, str]:
    """``(accel, reason)``. ``enable_kvm=False`` (cfg ``enable=no``) or policy ``tcg`` wins;
    ``auto`` picks KVM only with ``/dev/kvm`` and vmx/svm; explicit ``kvm`` that cannot work
    raises ConfigError."""
    if policy not in POLICIES:
        raise ConfigError(f"accelerator policy {policy!r} is not valid; valid: "
                          f"{', '.join(POLICIES)}")
    if policy == "tcg":
        return "tcg", "accelerator policy is tcg"
    if not enable_kvm:
        return "tcg", "the VM config says enable_kvm enable=no"
    virt = bool({"vmx", "svm"} & set(cpu_flags))
    if has_dev_kvm and virt:
        return "kvm", "/dev/kvm is present and the CPU has " + ("vmx" if "vmx" in cpu_flags
                                                                 else "svm")
    why = ("no /dev/kvm" if not has_dev_kvm else
           "/dev/kvm is present but the CPU flags show neither vmx nor svm "
           "(e.g. PVM or nested without VT)")
    if policy == "kvm":
        raise ConfigError(f"accelerator kvm requested but KVM cannot work here: {why}; "
                          "use --accel tcg or auto")
    return "tcg", f"using TCG (software emulation): {why}"


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The flags of the first CPU in ``/proc/cpuinfo`` text."""
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def probe(read_file: Callable[[str], bytes | str]) -> tuple[bool, frozenset[str]]:
    """``(has_dev_kvm, cpu_flags)`` through one file-reading callable (a DUT session's
    ``read_file``): ``/dev/kvm`` exists when ``/proc/misc`` lists the ``kvm`` device.
    Unreadable files count as absent (any exception of the reader)."""

    def text(path: str) -> str:
        try:
            data = read_file(path)
        except Exception:
            return ""
        return data.decode(errors="replace") if isinstance(data, bytes) else data

    has_kvm = any(line.split()[1:2] == ["kvm"] for line in text("/proc/misc").splitlines())
    return has_kvm, parse_cpu_flags(text("/proc/cpuinfo"))


def local_accel(policy: str, enable_kvm: bool) -> tuple[Accel, str]:
    """:func:`choose_accel` for this machine."""
    from pathlib import Path

    return choose_accel(policy, enable_kvm, *probe(lambda p: Path(p).read_bytes()))


__all__ = ["POLICIES", "choose_accel", "local_accel", "parse_cpu_flags", "probe"]
