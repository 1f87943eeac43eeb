"""Legacy ``VM(dut, name, suite)`` / ``QEMUKvm(dut, name, suite)`` on the plugin's VMs.

Inside a pytest run the VM comes from the plugin's factory (:mod:`.context`): the plugin's
options (``--dtsvirt-accel``, ``--dtsvirt-boot-timeout``, ...), its conf dir lookup
(``conf/`` beside the test module) and its tracking (a VM the suite forgets to stop is
stopped at the end of its test or class). Outside pytest it reads ``conf/`` of the current
directory, as legacy DTS did.

``params`` is the legacy list of ``{key: [options, ...]}`` dicts, empty until
:meth:`LegacyVM.load_config` (or ``start()``, which loads it by default) and writable: what a
suite changes in it (``vm.params[i]["cpu"][0]["number"] = 4``) or adds with ``set_vm_*``
replaces that parameter of the cfg when the VM starts.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from pytest_dtsvirt.compat import context
from pytest_dtsvirt.config.cfgfile import read_cfg
from pytest_dtsvirt.config.load import GLOBAL_CFG, GLOBAL_SECTION
from pytest_dtsvirt.config.schema import PARAMS
from pytest_dtsvirt.config.validate import RawEntry
from pytest_dtsvirt.errors import CompatWarning, ConfigError, Location, VmError
from pytest_dtsvirt.hypervisor import Hypervisor, VmOptions

log = logging.getLogger("pytest_dtsvirt.compat")

#: legacy ``def_driver`` default for ``start(bind_dev=True)`` in a DPDK guest
DEFAULT_BIND_DRIVER = "uio_pci_generic"
#: factor on a TCG guest's send_expect timeouts (legacy timeouts assume KVM)
TCG_TIMEOUT_SCALE = 6.0


#: VMs quick_start()ed and not booted yet (the legacy multi-VM path boots them together)
_PENDING: list[LegacyVM] = []


def _plain_vm(dut: Any, vm_name: str, suite: str) -> Hypervisor:
    """The plugin's kvm VM with ``conf/`` of the current directory (outside pytest)."""
    from pytest_dtsvirt.qemu.kvm import QEMUKvm as PluginKvm

    conf = os.environ.get("DTSVIRT_CONF_DIR", "conf")
    return PluginKvm(dut, vm_name, suite, VmOptions(conf_dir=conf))


class LegacyVM:
    """A VM with the legacy ``QEMUKvm`` API; ``hypervisor`` is the plugin's VM."""

    def __init__(self, dut: Any, vm_name: str, suite_name: str) -> None:
        self.host_dut = dut
        self.vm_name = vm_name
        self.suite = suite_name
        self._factory = context.current_factory()
        if self._factory is not None:
            self.hypervisor = self._factory.create(vm_name, suite_name)
        else:
            self.hypervisor = _plain_vm(dut, vm_name, suite_name)
        self.params: list[dict[str, Any]] = []
        self._loaded: list[dict[str, Any]] = []
        self.vm_dut: Any = None
        self.def_driver = ""
        self.migration_vm = False
        self._booted = False

    # -- configuration ------------------------------------------------------------------------
    def _cfg_path(self) -> Path:
        opts: VmOptions = getattr(self.hypervisor, "options", VmOptions(conf_dir="conf"))
        if opts.cfg_path:
            return Path(opts.cfg_path)
        return Path(opts.conf_dir or "conf") / f"{self.suite}.cfg"

    def _save(self, key: str, value: list[dict[str, str]]) -> None:
        for param in self.params:
            if key in param:
                param[key] = value
                return
        self.params.append({key: value})

    def load_config(self) -> None:
        """Legacy ``load_config``: ``[KVM]`` of ``virt_global.cfg`` (for keys not set yet),
        then the VM's section of the suite cfg (replacing by key), into :attr:`params`.
        A missing section is an error (legacy silently booted defaults)."""
        path = self._cfg_path()
        gpath = path.parent / GLOBAL_CFG
        loaded: list[dict[str, Any]] = []  # what the files say (the plugin VM has it already)
        if gpath.is_file() and gpath.resolve() != path.resolve():
            gsec = next((s for s in read_cfg(gpath).sections if s.name == GLOBAL_SECTION), None)
            for param in gsec.as_params() if gsec is not None else []:
                for key, value in param.items():
                    if not any(key in p for p in self.params):
                        self._save(key, value)
                        loaded.append({key: copy.deepcopy(value)})
        section = read_cfg(path).section(self.vm_name)
        for param in section.as_params():
            for key, value in param.items():
                self._save(key, value)
                loaded = [p for p in loaded if key not in p] + [{key: copy.deepcopy(value)}]
        self._loaded = loaded

    def set_local_config(self, local_conf: list[dict[str, Any]]) -> None:
        """Legacy: replace the parameters with ``local_conf`` (applied by ``start``)."""
        for param in local_conf:
            for key, value in param.items():
                self._save(key, copy.deepcopy(value))

    def find_option_index(self, option: str) -> int | None:
        """Legacy: the index of ``option`` in :attr:`params`, or None."""
        return next((i for i, p in enumerate(self.params) if option.strip() in p), None)

    def set_vm_param(self, key: str, **options: Any) -> None:
        """``set_vm_<key>(**options)``: appended to ``net``/``device``/``usercmd``, replaces
        the other parameters (as the plugin's ``set_vm_*``)."""
        entry = {str(k): str(v) for k, v in options.items()}
        schema = PARAMS.get(key)
        index = self.find_option_index(key)
        if index is not None and schema is not None and schema.append:
            self.params[index][key].append(entry)
        else:
            self._save(key, [entry])

    def set_vm_device(self, driver: str = "pci-assign", **opts: Any) -> None:
        """Legacy ``set_vm_device``: one more ``device`` entry. A legacy vhost-user
        ``opt_server`` was qemu's chardev text (``"server"``, ``"server,nowait"``; empty:
        client): it is read as ``yes``/``no``."""
        if "opt_server" in opts:
            server = str(opts["opt_server"] or "")
            if "server" in server.split(","):
                opts["opt_server"] = "yes"
            elif not server:
                del opts["opt_server"]
        self.set_vm_param("device", driver=driver, **opts)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("set_vm_"):
            key = name[len("set_vm_"):]

            def setter(**options: Any) -> None:
                self.set_vm_param(key, **options)
            return setter
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def _apply_params(self) -> None:
        """Push what differs from the loaded cfg into the plugin VM's parameters."""
        target: Any = getattr(self.hypervisor, "params", None)
        loaded = {k: v for p in self._loaded for k, v in p.items()}
        for param in self.params:
            for key, value in param.items():
                if loaded.get(key) == value:
                    continue
                origin = Location(file=f"{self.suite} params[{key!r}]", section=self.vm_name,
                                  key=key)
                if hasattr(target, "add_param"):
                    target.add_param(key, [RawEntry({str(k): str(v) for k, v in e.items()},
                                                    origin) for e in value], replacing=True)
                else:  # a backend without layered params (the fake): one call per entry
                    for entry in value:
                        self.hypervisor.set_vm_param(key, **{str(k): str(v)
                                                             for k, v in entry.items()})

    # -- life -------------------------------------------------------------------------------
    def start(self, load_config: bool = True, set_target: bool = True, cpu_topo: str = "",
              bind_dev: bool = True, **ignored: Any) -> Any:
        """Legacy ``start``: load the cfg (``load_config``), boot, return the guest DUT.
        ``set_target`` + ``bind_dev`` bind the guest's NIC ports to :attr:`def_driver`
        (``uio_pci_generic`` by default) in a DPDK guest (``guest = dpdk=yes``), as legacy
        did after building DPDK there. Under TCG the guest's ``send_expect`` timeouts are
        scaled by :data:`TCG_TIMEOUT_SCALE`. ``cpu_topo`` and other arguments are ignored with a
        :class:`CompatWarning`. A failed boot raises (legacy returned None)."""
        if cpu_topo:
            warnings.warn(f"{self.vm_name}: start(cpu_topo={cpu_topo!r}) is ignored: the "
                          "guest's topology comes from the cfg's cpu parameter",
                          CompatWarning, stacklevel=2)
        for name in ignored:
            warnings.warn(f"{self.vm_name}: start({name}=...) is ignored: not a legacy "
                          "argument this layer knows", CompatWarning, stacklevel=2)
        if self in _PENDING:  # quick_start() loaded and applied the cfg already
            load_config = False
        elif load_config:
            self.load_config()
        if self not in _PENDING:
            self._apply_params()
        if self._is_migration_target():
            # legacy: a section with ``migration`` is a backup VM; it waits for the stream
            self.hypervisor.start_incoming()
            return None
        if self._factory is not None:
            self.vm_dut = self._boot_with_factory()
        else:
            self.vm_dut = self.hypervisor.start()
        self._scale_timeouts()
        if set_target and bind_dev:
            self._bind_ports()
        return self.vm_dut

    def quick_start(self, load_config: bool = True, set_target: bool = True,
                    cpu_topo: str = "") -> None:
        """Legacy ``quick_start`` (the multi-VM path): load the cfg now; the next ``start()``
        of any quick-started VM of the same run boots them all at once
        (``vm_factory.boot_all``). Outside pytest it is a plain ``start()``."""
        if self._factory is None:
            self.start(load_config=load_config, set_target=set_target, cpu_topo=cpu_topo)
            return
        if load_config:
            self.load_config()
        self._apply_params()
        _PENDING.append(self)

    def _boot_with_factory(self) -> Any:
        assert self._factory is not None
        if self in _PENDING:
            group = [vm for vm in _PENDING if vm._factory is self._factory]
            for vm in group:
                _PENDING.remove(vm)
            self._factory.boot_all([vm.hypervisor for vm in group])
            for vm in group:
                vm._booted = True
        if self._booted:
            self._booted = False
            return self._factory.guest(self.hypervisor)
        return self._factory.boot(self.hypervisor)

    def _scale_timeouts(self) -> None:
        argv = getattr(self.hypervisor, "argv", ())
        if "tcg" in argv and hasattr(self.vm_dut, "set_timeout_scale"):
            log.info("%s: under TCG: the guest's send_expect timeouts are scaled by %s",
                     self.vm_name, TCG_TIMEOUT_SCALE)
            self.vm_dut.set_timeout_scale(TCG_TIMEOUT_SCALE)

    def _is_migration_target(self) -> bool:
        return any("migration" in p for p in self.params)

    # -- live migration (legacy names, forwarded to the plugin's QEMUKvm) -----------------------
    @property
    def migrate_port(self) -> int | None:
        """The port a migration target listens on (after ``start()``)."""
        port: int | None = getattr(self.hypervisor, "migrate_port", None)
        return port

    def start_migration(self, remote_ip: str = "127.0.0.1",
                        remote_port: int | None = None) -> bool:
        """Legacy ``start_migration``: begin migrating to a target's ``migrate_port``."""
        return bool(self.hypervisor.start_migration(remote_ip, remote_port))

    def wait_migration_done(self, **kwargs: Any) -> bool:
        """Legacy ``wait_migration_done``: True once done; MigrationError with qemu's reason."""
        return bool(self.hypervisor.wait_migration_done(**kwargs))

    def migrated_start(self, set_target: bool = True, cpu_topo: str = "") -> Any:
        """Legacy ``migrated_start``: the target's guest DUT once the migrated guest answers
        (its ports are not bound again, as legacy; under TCG its timeouts are scaled as
        ``start()`` does)."""
        self.vm_dut = self.hypervisor.migrated_start(set_target=set_target, cpu_topo=cpu_topo)
        self.migration_vm = True
        self._scale_timeouts()
        return self.vm_dut

    def _bind_ports(self) -> None:
        dut = self.vm_dut
        if not hasattr(dut, "bind_interfaces_linux"):
            return
        has_dpdk = dut.run(["sh", "-c", "command -v dpdk-testpmd"], timeout=30).ok
        if not has_dpdk:
            log.info("%s: not a DPDK guest; bind_dev does nothing", self.vm_name)
            return
        if dut.ports_info:
            dut.bind_interfaces_linux(self.def_driver or DEFAULT_BIND_DRIVER)

    def stop(self) -> None:
        """Power the VM down and forget it (idempotent)."""
        if self in _PENDING:
            _PENDING.remove(self)
        if self._factory is not None:
            if self.hypervisor in self._factory.vms:
                self._factory.stop(self.hypervisor)
        else:
            self.hypervisor.stop()
        self.vm_dut = None

    def quit(self) -> None:
        """Legacy ``quit``: close the connection to the guest (the VM keeps running)."""
        if self.vm_dut is not None:
            self.vm_dut.close()

    def set_qemu_emulator(self, qemu_emulator_path: str) -> None:
        """Legacy ``set_qemu_emulator``: boot with that qemu binary (the cfg's ``qemu =
        path=``); an error is logged and nothing changes when it is not an executable file
        on the DUT."""
        check = self.host_dut.run(["test", "-f", qemu_emulator_path, "-a", "-x",
                                   qemu_emulator_path], timeout=30)
        if not check.ok:
            log.error("%s: no executable emulator %s on the DUT", self.vm_name,
                      qemu_emulator_path)
            return
        self.set_vm_param("qemu", path=qemu_emulator_path)

    # -- legacy attributes ----------------------------------------------------------------------
    @property
    def qemu_emulator(self) -> str:
        """The qemu binary: the running one's, else the cfg's ``qemu = path=...``, else
        ``qemu-system-x86_64``."""
        argv = self.hypervisor.argv
        if argv:
            return str(argv[0])
        for param in self.params:
            for entry in param.get("qemu", []):
                if entry.get("path"):
                    return str(entry["path"])
        return "qemu-system-x86_64"

    @property
    def hostfwd_addr(self) -> str:
        """Legacy ``"<host>:<port>"`` where the guest's SSH is forwarded on the DUT."""
        port = self.hypervisor.hostfwd_port
        if port is None:
            raise VmError(f"{self.vm_name}: not started: no hostfwd address yet")
        return f"127.0.0.1:{port}"

    @property
    def pci_maps(self) -> list[dict[str, str]]:
        """Legacy ``[{"hostpci": ..., "guestpci": ...}]`` of passed-through devices."""
        return self.hypervisor.get_pci_mappings()

    def get_pci_mappings(self) -> list[dict[str, str]]:
        return self.pci_maps

    def get_vm_ip(self) -> str:
        """Legacy: how the DUT reaches the guest's SSH (``hostfwd_addr``)."""
        return self.hostfwd_addr

    def isalive(self) -> bool:
        """Legacy ``isalive`` (is this VM's qemu running): True while the VM was started,
        not stopped, and has not died."""
        from pytest_dtsvirt.vmfactory import death_of

        return self.vm_dut is not None and death_of(self.hypervisor) is None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.suite}/{self.vm_name}>"


class QEMUKvm(LegacyVM):
    """Legacy ``QEMUKvm(dut, vm_name, suite_name)``."""


def VM(dut: Any, vm_name: str, suite_name: str) -> LegacyVM:
    """Legacy ``virt_common.VM``: the VM of ``suite_name``'s cfg section ``vm_name``. Only
    ``virt_type = KVM`` exists here (``LIBVIRT`` is a ConfigError)."""
    vm = QEMUKvm(dut, vm_name, suite_name)
    try:
        section = read_cfg(vm._cfg_path()).section(vm_name)
    except ConfigError:
        return vm  # the boot reports it with the plugin's message
    param = section.param("virt_type")
    kind = param.entries[0].options.get("virt_type", "KVM") if param and param.entries else "KVM"
    if kind.upper() != "KVM":
        vm.stop()
        raise ConfigError(f"virt_type {kind!r} is not supported; valid: KVM",
                          section.location(str(vm._cfg_path()), "virt_type"))
    return vm
