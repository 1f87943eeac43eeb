"""Legacy ``PmdOutput``: ``dpdk-testpmd`` on any DUT (host or guest) with the legacy calls,
on top of the shared driver :class:`pytest_dtsvirt.dpdk.testpmd.Testpmd`.

::

    pmd = PmdOutput(self.dut)
    pmd.start_testpmd(cores="1S/2C/1T", param="--nb-cores=1", no_pci=True,
                      vdevs=vhost_user_vdevs(["vhost-net0"], queues=2, devargs={"client": 1}))
    pmd.execute_cmd("start")
    pmd.get_pmd_stats(0)["RX-packets"]
    pmd.quit()

Differences from legacy: testpmd runs in a shell of its own (the legacy ``session``
argument is accepted and only names the log), in the DUT's ``base_dir`` (relative vhost
socket paths land there) and with the DUT's process tag (``kill_all`` ends it); on a DUT
without free hugepages ``--no-huge -m 1024`` is added (logged); there is no fixed 10 s sleep
after the start (the prompt is awaited).
"""

from __future__ import annotations

import logging
import re
import shlex
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pytest_dtsvirt.dpdk.testpmd import PROMPT_RE, Testpmd
from pytest_dtsvirt.errors import SessionError

log = logging.getLogger("pytest_dtsvirt.compat")

#: legacy ``get_pmd_stats`` keys, each read as ``<key>: <number>``
STATS_KEYS = ("RX-packets", "RX-missed", "RX-bytes", "RX-badcrc", "RX-badlen", "RX-errors",
              "RX-nombuf", "TX-packets", "TX-errors", "TX-bytes", "Bad-ipcsum", "Bad-l4csum")
NO_HUGE_ARGS = ("--no-huge", "-m", "1024")
_TESTPMD_PROMPTS = ("testpmd> ", "testpmd>", PROMPT_RE)


def pmd_value(label: str, text: str) -> int | None:
    """The number after ``label:`` in testpmd output (pure); None if absent (legacy)."""
    found = re.search(rf"{re.escape(label.rstrip(':'))}:\s+(\d+)", text)
    return int(found.group(1)) if found else None


def parse_pmd_stats(text: str) -> dict[str, int | None]:
    """Legacy ``get_pmd_stats`` dict of ``show port stats N`` output (pure)."""
    return {key: pmd_value(key, text) for key in STATS_KEYS}


def value_after(key: str, regex: str, text: str) -> str:
    """Legacy ``get_value_from_string``: the first ``regex`` match right after ``key``;
    ``" "`` when there is none (legacy's "not found")."""
    found = re.search(rf"(?<={re.escape(key)}){regex}", text)
    return found.group(0) if found else " "


def values_after(key: str, regex: str, text: str) -> list[Any]:
    """Legacy ``get_all_value_from_string``: every match of ``regex`` after ``key``."""
    return re.findall(rf"(?<={re.escape(key)}){regex}", text)


def vhost_user_vdevs(ifaces: Sequence[str], queues: int = 1,
                     devargs: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
                     name: str = "net_vhost") -> list[str]:
    """``--vdev`` values for vhost-user ports (pure): ``net_vhost<i>,iface=<path>,
    queues=<queues>`` plus the port's devargs (``client``, ``tso``, ``dmas``, ``iommu-support``,
    anything else, in order). ``devargs`` is one mapping for every port or one per port.
    A ``dmas`` list is written in DPDK's bracket form (``dmas=[txq0;rxq0]``)."""
    per_port: list[Mapping[str, Any]]
    if devargs is None:
        per_port = [{}] * len(ifaces)
    elif isinstance(devargs, Mapping):
        per_port = [devargs] * len(ifaces)
    else:
        per_port = list(devargs)
        if len(per_port) != len(ifaces):
            raise ValueError(f"{len(per_port)} devargs for {len(ifaces)} vhost-user ports")
    vdevs = []
    for index, (iface, extra) in enumerate(zip(ifaces, per_port, strict=True)):
        if "," in iface or " " in iface:
            raise ValueError(f"vhost-user socket path must not contain ',' or ' ': {iface!r}")
        args = {"iface": iface, "queues": queues, **extra}
        parts = []
        for key, value in args.items():
            if isinstance(value, bool):
                value = int(value)
            if isinstance(value, list | tuple):
                value = "[" + ";".join(map(str, value)) + "]"
            parts.append(f"{key}={value}")
        vdevs.append(f"{name}{index}," + ",".join(parts))
    return vdevs


class _Run(Testpmd):
    """The shared driver with an argv given by the caller, started in ``cwd`` with the
    DUT's process tag."""

    __test__ = False

    def __init__(self, host: Any, argv: list[str], cwd: str, tag: str, role: str,
                 ready_timeout: float) -> None:
        super().__init__(host, ready_timeout=ready_timeout)
        self._want, self._cwd, self._tag, self.role = argv, cwd, tag, role

    def _prepare(self) -> list[str]:
        return ["env", self._tag, "sh", "-c", 'cd -- "$1" && shift && exec "$@"', "sh",
                self._cwd, *self._want]

    def expect_after(self, cmd: str, expected: str, timeout: float) -> str:
        """Send ``cmd``; the output up to regex ``expected`` (not the prompt)."""
        with self._lock:
            if self._shell is None or self._reader is None:
                raise SessionError(f"{self.role} on {self.host.name} is not running")
            self._shell.send(cmd + "\n")
            return self._reader.wait_for(expected, time.monotonic() + timeout,
                                         f"testpmd {cmd!r}")

    def pending(self, timeout: float) -> str:
        """What testpmd printed since the last command, after ``timeout`` s more."""
        time.sleep(max(timeout, 0.0))
        if self._reader is None:
            return ""
        with self._reader._cond:
            text = self._reader.text[self._reader.pos:]
            self._reader.pos = len(self._reader.text)
        return text


class PmdOutput:
    """Legacy ``PmdOutput(dut, session=None)`` (see the module docstring)."""

    def __init__(self, dut: Any, session: Any = None) -> None:
        self.dut = dut
        self.session = session if session is not None else dut
        self.command = ""
        self._pmd: _Run | None = None
        dut.testpmd_output = self

    @property
    def pmd(self) -> Testpmd:
        """The shared driver of the running testpmd (``set_fwd``, ``port_stats``, ...)."""
        if self._pmd is None:
            raise SessionError(f"{self.dut.name}: testpmd is not started")
        return self._pmd

    def _eal_config(self, eal_param: str, config: dict[str, Any]) -> dict[str, Any]:
        """Legacy start_testpmd's reading of ``eal_param``: ``-w`` means ``-a``, a
        ``--file-prefix`` becomes the prefix, the rest stays ``other_eal_param``; with no
        allow/block list and no ``--no-pci`` every port is allowed."""
        eal = f" {eal_param} ".replace(" -w ", " -a ")
        prefixes = re.findall(r"--file-prefix[\s=](\S+)", eal)
        if prefixes:
            config["prefix"] = prefixes[-1]
        config["other_eal_param"] = re.sub(r"--file-prefix[\s=]\S+", "", eal).strip()
        listed = any(f" {o} " in eal for o in ("-a", "-b", "--no-pci"))
        if not listed and "ports" not in config and "b_ports" not in config and \
                not config.get("no_pci"):
            config["ports"] = [p["pci"] for p in getattr(self.dut, "ports_info", None) or []]
        return config

    def start_testpmd(self, cores: Any = "default", param: str = "", eal_param: str = "",
                      socket: int = 0, fixed_prefix: bool = False, expected: str = "testpmd> ",
                      timeout: float = 120, **config: Any) -> str:
        """Legacy ``start_testpmd``: EAL from ``dut.create_eal_parameters(cores, socket,
        fixed_prefix, ports, port_options, prefix, no_pci, b_ports, vdevs, eal_param)``,
        then ``-- -i param``. Returns the start-up output; SessionError (with it) when
        testpmd exits or does not prompt within ``timeout``."""
        if self._pmd is not None and self._pmd.running:
            self.quit()
        cfg = self._eal_config(eal_param, dict(config))
        eal = self.dut.create_eal_parameters(fixed_prefix=fixed_prefix, socket=socket,
                                             cores=cores, **cfg)
        argv = [self.dut.apps_name["test-pmd"].strip(), *shlex.split(eal)]
        if "--no-huge" not in argv and not self._has_hugepages():
            log.info("%s: no free hugepages: testpmd runs with %s", self.dut.name,
                     " ".join(NO_HUGE_ARGS))
            argv += NO_HUGE_ARGS
        argv += ["--", "-i", *shlex.split(param)]
        self.command = shlex.join(argv)
        self._pmd = _Run(self.dut.session, argv, self.dut.base_dir, self.dut.process_tag,
                         f"testpmd on {self.dut.name}", timeout)
        self._pmd.launch()
        return self._pmd.startup_output

    def _has_hugepages(self) -> bool:
        out = self.dut.run(["grep", "HugePages_Free", "/proc/meminfo"], timeout=30).stdout
        found = re.search(r"(\d+)", out)
        return found is not None and int(found.group(1)) > 0

    def get_pmd_cmd(self) -> str:
        return self.command

    def execute_cmd(self, pmd_cmd: str, expected: str = "testpmd> ", timeout: float = 30,
                    alt_session: bool = False) -> str:
        """One testpmd command; its output up to the prompt (or regex ``expected``).
        ``quit`` (legacy expected ``"# "``) ends testpmd."""
        if pmd_cmd.strip() == "quit":
            self.quit()
            return ""
        if expected in _TESTPMD_PROMPTS:
            return self.pmd.command(pmd_cmd, timeout)
        assert self._pmd is not None
        return self._pmd.expect_after(pmd_cmd, expected, timeout)

    def get_output(self, timeout: float = 1) -> str:
        """What testpmd printed since the last command (waits ``timeout`` s first)."""
        return self._pmd.pending(timeout) if self._pmd is not None else ""

    def quit(self) -> None:
        """``quit`` testpmd and make sure it is gone (idempotent)."""
        if self._pmd is not None:
            pmd, self._pmd = self._pmd, None
            try:
                pmd.quit()
            finally:
                self._remove_runtime_dirs()

    def _remove_runtime_dirs(self) -> None:
        prefixes = re.findall(r"--file-prefix=(\S+)", self.command)
        for prefix in prefixes:
            self.dut.run(["sh", "-c", 'rm -rf -- "/var/run/dpdk/$1" '
                          '"${XDG_RUNTIME_DIR:-/tmp}/dpdk/$1"', "sh", prefix], timeout=30)

    # -- legacy readers --------------------------------------------------------------------------
    def get_pmd_value(self, prefix: str, out: str) -> int | None:
        return pmd_value(prefix, out)

    def get_pmd_stats(self, portid: int) -> dict[str, int | None]:
        """``show port stats N`` as the legacy dict (``RX-packets``, ``TX-bytes``, ...)."""
        return parse_pmd_stats(self.pmd.command(f"show port stats {int(portid)}"))

    def get_value_from_string(self, key_str: str, regx_str: str, string: str) -> str:
        return value_after(key_str, regx_str, string)

    def get_all_value_from_string(self, key_str: str, regx_str: str, string: str) -> list[Any]:
        return values_after(key_str, regx_str, string)

    def get_detail_from_port_info(self, key_str: str, regx_str: str, port: int) -> str:
        return value_after(key_str, regx_str, self.pmd.command(f"show port info {int(port)}"))

    def get_port_mac(self, port_id: int) -> str:
        return self.get_detail_from_port_info("MAC address: ", "([0-9A-F]{2}:){5}[0-9A-F]{2}",
                                              port_id)

    def get_port_link_status(self, port_id: int) -> str:
        return self.get_detail_from_port_info("Link status: ", r"\S+", port_id)

    def get_port_link_speed(self, port_id: int) -> str:
        return self.get_detail_from_port_info("Link speed: ", r"\d+", port_id)

    def get_port_connect_socket(self, port_id: int) -> str:
        return self.get_detail_from_port_info("Connect to socket: ", r"\d+", port_id)

    def get_port_promiscuous_mode(self, port_id: int) -> str:
        return self.get_detail_from_port_info("Promiscuous mode: ", r"\S+", port_id)

    def wait_link_status_up(self, port_id: int, timeout: float = 10) -> bool:
        """Poll ``show port info`` until the link is up; False at ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if self.get_port_link_status(port_id) == "up":
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


class VhostUserPmd(PmdOutput):
    """testpmd as a vhost-user backend: :meth:`start` takes the socket paths (relative
    ones are in the DUT's ``base_dir``), a queue count and per-port devargs."""

    def start(self, ifaces: Sequence[str], *, queues: int = 1,
              devargs: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
              cores: Any = "default", param: str = "", prefix: str = "vhost",
              extra_vdevs: Iterable[str] = (), timeout: float = 120) -> str:
        """Start testpmd with one ``net_vhost`` port per socket; unless a port is
        ``client=1`` its socket is awaited (bound) before this returns."""
        vdevs = [*vhost_user_vdevs(ifaces, queues, devargs), *extra_vdevs]
        out = self.start_testpmd(cores=cores, param=param, no_pci=True, vdevs=vdevs,
                                 prefix=prefix, timeout=timeout)
        clients = devargs if isinstance(devargs, Sequence) else [devargs or {}] * len(ifaces)
        for iface, extra in zip(ifaces, clients, strict=True):
            if str(extra.get("client", "0")) not in ("1", "True") and \
                    f"({iface})" not in out and iface not in out:
                raise SessionError(f"{self.dut.name}: testpmd did not bind {iface}:\n"
                                   f"{out[-2000:]}")
        return out


__all__ = ["PmdOutput", "VhostUserPmd", "parse_pmd_stats", "pmd_value",
           "value_after", "values_after", "vhost_user_vdevs"]
