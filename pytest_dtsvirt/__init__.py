"""pytest-dtsvirt: real QEMU/KVM virtual machines as pytest fixtures (DTS virtualization).

What a suite author uses, importable from here::

    from pytest_dtsvirt import QEMUKvm, VmFactory, Dut, VmDut, TestpmdBackend, VmStartError

- VMs: :class:`Hypervisor` (the type the ``vm``/``session_vm`` fixtures hand out),
  :class:`QEMUKvm` (the qemu backend, the reference's ``QEMUKvm(dut, "vm0", suite)`` flow),
  :class:`VmFactory` (the ``vm_factory`` fixture), :class:`VmOptions`, :class:`Settings`;
  the QMP and guest agent clients a VM carries (:class:`Qmp`, :class:`GuestAgent`).
- DUTs: :class:`Dut` (the ``dut`` fixture), :class:`VmDut` (``vm_dut``), :func:`connect`,
  :class:`DutConfig`, :func:`local_dut_config`, :func:`load_dut_configs`.
- DPDK: :class:`Testpmd` (one driver for the host and the guest), :class:`TestpmdBackend`
  (vhost-user backend), :class:`GuestTestpmd` (``vm_dut.testpmd()``), :class:`TestpmdHost`,
  :func:`build_testpmd_argv` and the parsers (:func:`parse_port_stats`, ...).
- Errors: the tree of :mod:`pytest_dtsvirt.errors` under :class:`DtsvirtError`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pytest_dtsvirt.errors import (
    AgentError,
    AgentReplyError,
    AgentTimeout,
    CommandTimeout,
    CompatWarning,
    ConfigError,
    ConfigWarning,
    DtsvirtError,
    GuestAuthError,
    GuestImageError,
    GuestPanic,
    Location,
    MigrationError,
    NotCheckable,
    QemuExited,
    QmpError,
    SessionError,
    UnsafeWorkdir,
    VerifyError,
    VmDied,
    VmError,
    VmStartError,
)

if TYPE_CHECKING:
    from pytest_dtsvirt.dpdk import (
        GuestTestpmd,
        PacketRecord,
        PortStats,
        PortSummary,
        Testpmd,
        TestpmdBackend,
        TestpmdHost,
        build_testpmd_argv,
        parse_packet_log,
        parse_port_stats,
        parse_port_summary,
    )
    from pytest_dtsvirt.hypervisor import (
        Hypervisor,
        VmOptions,
    )
    from pytest_dtsvirt.qemu.kvm import QEMUKvm
    from pytest_dtsvirt.qemu.qga import GuestAgent
    from pytest_dtsvirt.qemu.qmp import Qmp
    from pytest_dtsvirt.session.dut import (
        Dut,
        VmDut,
        connect,
    )
    from pytest_dtsvirt.session.dutconfig import (
        DutConfig,
        load_dut_configs,
        local_dut_config,
    )
    from pytest_dtsvirt.vmfactory import (
        Settings,
        VmFactory,
    )

__version__ = "0.1.0"

#: name -> module of what is imported on first use (the VM and SSH modules load paramiko
#: and qemu.qmp; the error classes stay cheap to import)
_LAZY = {
    "Hypervisor": "pytest_dtsvirt.hypervisor",
    "VmOptions": "pytest_dtsvirt.hypervisor",
    "QEMUKvm": "pytest_dtsvirt.qemu.kvm",
    "GuestAgent": "pytest_dtsvirt.qemu.qga",
    "Qmp": "pytest_dtsvirt.qemu.qmp",
    "Dut": "pytest_dtsvirt.session.dut",
    "VmDut": "pytest_dtsvirt.session.dut",
    "connect": "pytest_dtsvirt.session.dut",
    "DutConfig": "pytest_dtsvirt.session.dutconfig",
    "load_dut_configs": "pytest_dtsvirt.session.dutconfig",
    "local_dut_config": "pytest_dtsvirt.session.dutconfig",
    "GuestTestpmd": "pytest_dtsvirt.dpdk",
    "PacketRecord": "pytest_dtsvirt.dpdk",
    "PortStats": "pytest_dtsvirt.dpdk",
    "PortSummary": "pytest_dtsvirt.dpdk",
    "Testpmd": "pytest_dtsvirt.dpdk",
    "TestpmdBackend": "pytest_dtsvirt.dpdk",
    "TestpmdHost": "pytest_dtsvirt.dpdk",
    "build_testpmd_argv": "pytest_dtsvirt.dpdk",
    "parse_packet_log": "pytest_dtsvirt.dpdk",
    "parse_port_stats": "pytest_dtsvirt.dpdk",
    "parse_port_summary": "pytest_dtsvirt.dpdk",
    "Settings": "pytest_dtsvirt.vmfactory",
    "VmFactory": "pytest_dtsvirt.vmfactory",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AgentError",
    "AgentReplyError",
    "AgentTimeout",
    "CommandTimeout",
    "CompatWarning",
    "ConfigError",
    "ConfigWarning",
    "DtsvirtError",
    "Dut",
    "DutConfig",
    "GuestAgent",
    "GuestAuthError",
    "GuestImageError",
    "GuestPanic",
    "GuestTestpmd",
    "Hypervisor",
    "Location",
    "MigrationError",
    "NotCheckable",
    "PacketRecord",
    "PortStats",
    "PortSummary",
    "QEMUKvm",
    "QemuExited",
    "Qmp",
    "QmpError",
    "SessionError",
    "Settings",
    "Testpmd",
    "TestpmdBackend",
    "TestpmdHost",
    "UnsafeWorkdir",
    "VerifyError",
    "VmDied",
    "VmDut",
    "VmError",
    "VmFactory",
    "VmOptions",
    "VmStartError",
    "__version__",
    "build_testpmd_argv",
    "connect",
    "load_dut_configs",
    "local_dut_config",
    "parse_packet_log",
    "parse_port_stats",
    "parse_port_summary",
]
