"""Legacy ``PmdOutput``: ``dpdk-testpmd`` on any DUT (host or guest) with the legacy calls,
on top of the shared driver :class:`pytest_dtsvirt.dpdk.testpmd.Testpmd`.

::

    pmd = PmdOutput(self.dut)
    pmd.start_testpmd(cores="1S/2C/1T", param="--nb-cores=1", no_pci=True,
                      vdevs=vhost_user_vdevs(["vhost-net0"], queues=2, devargs={"client": 1}))
    pmd.execute_cmd("start")
    pmd.get_pmd_stats(0)["RX-packets"]
    pmd.quit()

As in legacy, testpmd runs in ``session`` (a shell from ``dut.new_session()``, or the DUT's
main shell), so a suite may keep typing into that session (``session.send_expect("show port
stats all", "testpmd> ")``, ``"quit"``). Differences: it starts in the DUT's ``base_dir``
(relative vhost socket paths land there) and carries the DUT's process tag (``kill_all`` ends
it); on a DUT without free hugepages ``--no-huge -m 1024`` is added (logged); a testpmd that
exits at start is an error with its output; there is no fixed 10 s sleep after the start
(the prompt is awaited). The prompt is matched with the shared driver's
(:data:`pytest_dtsvirt.dpdk.testpmd.PROMPT_RE`, which survives verbose dumps written into it)
and the counters are read with its parsers too (:meth:`PmdOutput.port_stats`). For long
verbose captures use the shared driver itself (``vm_dut.testpmd()``, ``TestpmdBackend``): it
drains the output in a thread.
"""

from __future__ import annotations

import logging
import re
import shlex
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pytest_dtsvirt.dpdk.parse import PortStats, parse_port_stats
from pytest_dtsvirt.dpdk.testpmd import PROMPT_RE
from pytest_dtsvirt.errors import CommandTimeout, SessionError
from pytest_dtsvirt.session.base import PROMPT as SHELL_PROMPT

log = logging.getLogger("pytest_dtsvirt.compat")

#: legacy ``get_pmd_stats`` keys, each read as ``<key>: <number>``
STATS_KEYS = ("RX-packets", "RX-missed", "RX-bytes", "RX-badcrc", "RX-badlen", "RX-errors",
              "RX-nombuf", "TX-packets", "TX-errors", "TX-bytes", "Bad-ipcsum", "Bad-l4csum")
NO_HUGE_ARGS = ("--no-huge", "-m", "1024")
#: added to a vhost-user testpmd (see start_testpmd)
VHOST_QUIET = ("--log-level=lib.vhost.config:notice",)
_TESTPMD_PROMPTS = ("testpmd> ", "testpmd>", PROMPT_RE)
_SHELL_PROMPT = re.escape(SHELL_PROMPT)


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


class PmdOutput:
    """Legacy ``PmdOutput(dut, session=None)`` (see the module docstring)."""

    def __init__(self, dut: Any, session: Any = None) -> None:
        self.dut = dut
        self.session = session if session is not None else dut
        self.command = ""
        self.running = False
        dut.testpmd_output = self

    def _send(self, cmd: str, expected: str, timeout: float) -> str:
        out = self.session.send_expect(cmd, expected, timeout)
        return str(out)

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
        then ``-- -i param``, typed into the session in ``dut.base_dir``. Returns the
        start-up output; SessionError with it when testpmd exits before its prompt,
        CommandTimeout when the prompt does not come within ``timeout``."""
        cfg = self._eal_config(eal_param, dict(config))
        eal = self.dut.create_eal_parameters(fixed_prefix=fixed_prefix, socket=socket,
                                             cores=cores, **cfg)
        argv = [self.dut.apps_name["test-pmd"].strip(), *shlex.split(eal)]
        if "--no-huge" not in argv and not self._has_hugepages():
            log.info("%s: no free hugepages: testpmd runs with %s", self.dut.name,
                     " ".join(NO_HUGE_ARGS))
            argv += NO_HUGE_ARGS
        if any(re.match(r"(--vdev[= ]?)?'?(net|eth)_vhost", a) for a in argv) and \
                not any(a.startswith("--log-level") for a in argv):
            # Nobody reads the session while a suite waits elsewhere: vhost's per-message
            # INFO lines would fill the pty, block testpmd's vhost thread and with it every
            # qemu waiting for a vhost-user reply (a second VM's DPDK hangs at probe).
            argv += list(VHOST_QUIET)
        argv += ["--", "-i", *shlex.split(param)]
        self.command = shlex.join(argv)
        self._send(f"cd {shlex.quote(self.dut.base_dir)}", "# ", 10)
        # testpmd's prompt, or the shell's when testpmd exited (EAL error, bad argument)
        out = self._send(self.command, f"(?:{PROMPT_RE}|{_SHELL_PROMPT})", timeout)
        if not self._at_testpmd_prompt():
            self._remove_runtime_dirs()
            raise SessionError(f"{self.dut.name}: testpmd exited: {self.command}\n"
                               f"{out[-2000:]}")
        self.running = True
        log.info("%s: testpmd started: %s", self.dut.name, self.command)
        return out

    def _at_testpmd_prompt(self) -> bool:
        """True when the session answers as testpmd: an empty line gives testpmd's prompt
        back (a shell would give its own, and this waits 10 s in vain)."""
        try:
            self._send("", PROMPT_RE, 10)
        except CommandTimeout:
            return False
        return True

    def _has_hugepages(self) -> bool:
        out = self.dut.run(["grep", "HugePages_Free", "/proc/meminfo"], timeout=30).stdout
        found = re.search(r"(\d+)", out)
        return found is not None and int(found.group(1)) > 0

    def get_pmd_cmd(self) -> str:
        return self.command

    def execute_cmd(self, pmd_cmd: str, expected: str = "testpmd> ", timeout: float = 30,
                    alt_session: bool = False) -> str:
        """One testpmd command in the session; its output up to ``expected``."""
        if expected in _TESTPMD_PROMPTS:
            expected = PROMPT_RE  # also when verbose dumps split the prompt
        return self._send(pmd_cmd, expected, timeout)

    def get_output(self, timeout: float = 1) -> str:
        """What the session printed since the last command (waits ``timeout`` s)."""
        return str(self.session.get_session_before(timeout))

    def quit(self) -> None:
        """``quit`` testpmd (back to the shell prompt) and remove its EAL runtime
        directory."""
        if self.running:
            self.running = False
            try:
                self._send("quit", _SHELL_PROMPT, 60)
            finally:
                self._remove_runtime_dirs()

    def _remove_runtime_dirs(self) -> None:
        for prefix in re.findall(r"--file-prefix=(\S+)", self.command):
            self.dut.run(["sh", "-c", 'rm -rf -- "/var/run/dpdk/$1" '
                          '"${XDG_RUNTIME_DIR:-/tmp}/dpdk/$1"', "sh", prefix], timeout=30)

    # -- legacy readers --------------------------------------------------------------------------
    def get_pmd_value(self, prefix: str, out: str) -> int | None:
        return pmd_value(prefix, out)

    def get_pmd_stats(self, portid: int) -> dict[str, int | None]:
        """``show port stats N`` as the legacy dict (``RX-packets``, ``TX-bytes``, ...)."""
        return parse_pmd_stats(self.execute_cmd(f"show port stats {int(portid)}"))

    def port_stats(self, port: int) -> PortStats:
        """``show port stats N`` as the shared driver's :class:`PortStats`."""
        out = self.execute_cmd(f"show port stats {int(port)}")
        try:
            return parse_port_stats(out)[port]
        except (KeyError, ValueError):
            raise SessionError(f"show port stats {port}: {out.strip()}") from None

    def get_value_from_string(self, key_str: str, regx_str: str, string: str) -> str:
        return value_after(key_str, regx_str, string)

    def get_all_value_from_string(self, key_str: str, regx_str: str, string: str) -> list[Any]:
        return values_after(key_str, regx_str, string)

    def get_detail_from_port_info(self, key_str: str, regx_str: str, port: int) -> str:
        return value_after(key_str, regx_str, self.execute_cmd(f"show port info {int(port)}"))

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
            path = iface if iface.startswith("/") else f"{self.dut.base_dir}/{iface}"
            if str(extra.get("client", "0")) not in ("1", "True") and \
                    not self.dut.run(["test", "-S", path], timeout=30).ok:
                raise SessionError(f"{self.dut.name}: testpmd did not bind {path}:\n"
                                   f"{out[-2000:]}")
        return out


__all__ = ["PmdOutput", "VhostUserPmd", "parse_pmd_stats", "pmd_value",
           "value_after", "values_after", "vhost_user_vdevs"]
