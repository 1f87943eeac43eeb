"""The legacy DTS DUT names that are about the DUT's CPUs, DPDK apps and working directory:
``base_dir``, ``cores``, ``get_core_list``, ``get_numa_id``, ``create_eal_parameters``,
``apps_name``, ``build_dpdk_apps``. :class:`DtsDutApi` is mixed into every
:class:`~pytest_dtsvirt.session.dut.Dut` (host and guest).

The pure parts (CPU topology from ``/proc/cpuinfo``, the legacy core selection
``"1S/2C/1T"``/``"all"``, the EAL string of ``create_eal_parameters``) are functions here;
the mixin reads the DUT through ``run``.

Differences from the legacy DUT (documented in docs/porting.md): core 0 is not bypassed
(this project's machines have few CPUs); the allow-list option is always ``-a`` (DPDK >=
20.11); ``base_dir`` is a private directory made on first use and removed with the DUT (also
when the test process is killed: :mod:`pytest_dtsvirt.session.owneddir`), not a DPDK source
tree.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pytest_dtsvirt.errors import SessionError
from pytest_dtsvirt.session import appbuild
from pytest_dtsvirt.session.base import CommandResult
from pytest_dtsvirt.session.owneddir import OwnedDir

log = logging.getLogger(__name__)

#: legacy ``apps_name`` keys -> the installed DPDK program (Debian ``dpdk``/``dpdk-dev``)
INSTALLED_APPS = {
    "test-pmd": "dpdk-testpmd",
    "pdump": "dpdk-pdump",
    "proc-info": "dpdk-proc-info",
    "test": "dpdk-test",
    "dumpcap": "dpdk-dumpcap",
}
#: where the ``dpdk-doc`` package puts the DPDK examples' sources
EXAMPLES_DIR = "/usr/share/dpdk/examples"
#: where ``base_dir`` is made on the DUT (``mktemp -d``)
BASE_DIR_TEMPLATE = "/tmp/dtsvirt-base.XXXXXXXX"
#: removes ``<EAL runtime dir>/dpdk/<prefix>`` for each argument unless a process holds a
#: file of it open (fd links show the resolved path: ``/run``, not ``/var/run``); prints
#: the ones left
_REMOVE_EAL_DIRS = (
    'if [ "$(id -u)" = 0 ]; then d=/var/run/dpdk; else d="${XDG_RUNTIME_DIR:-/tmp}/dpdk"; fi; '
    'for p; do [ -d "$d/$p" ] || continue; '
    'if ls -l /proc/[0-9]*/fd 2>/dev/null | grep -qF -- "/dpdk/$p/"; then echo "$d/$p"; '
    'else rm -rf -- "$d/$p"; fi; done; exit 0')
#: links each installed program given into base_dir (``$1``) for the legacy ``./<app>``;
#: lists the example build directories there
_LINK_APPS = (
    'base=$1; shift; for p; do t=$(command -v "$p") && [ "$t" != "$base/$p" ] && '
    'ln -sfn "$t" "$base/$p"; done; ls -d "$base"/examples/*/build 2>/dev/null; exit 0')
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_CORE_CONFIG = re.compile(r"^(\d+)S/(\d+)C/(\d+)T$", re.IGNORECASE)


@dataclass(frozen=True)
class Lcore:
    """One logical CPU: its number, socket (physical package) and core id."""

    thread: int
    socket: int
    core: int

    def as_legacy(self) -> dict[str, str]:
        """The legacy ``dut.cores`` entry (strings, as the legacy DUT had them)."""
        return {"thread": str(self.thread), "socket": str(self.socket), "core": str(self.core)}


def parse_cpuinfo(text: str) -> list[Lcore]:
    """The logical CPUs of ``/proc/cpuinfo`` (pure). A CPU without ``physical id``/``core
    id`` lines (some guests) is socket 0 and its own core."""
    cpus: list[Lcore] = []
    for block in re.split(r"\n\s*\n", text):
        fields = dict((k.strip(), v.strip()) for k, _, v in
                      (line.partition(":") for line in block.splitlines()) if k.strip())
        if "processor" not in fields or not fields["processor"].isdigit():
            continue
        thread = int(fields["processor"])
        cpus.append(Lcore(thread, int(fields.get("physical id", "0") or 0),
                          int(fields.get("core id", str(thread)) or thread)))
    return sorted(cpus, key=lambda c: c.thread)


def select_cores(cpus: Sequence[Lcore], config: str = "all", socket: int = -1,
                 from_last: bool = False) -> list[str]:
    """The legacy ``get_core_list`` (pure): ``"all"`` (every lcore, of ``socket`` if >= 0)
    or ``"<n>S/<n>C/<n>T"`` (n sockets, n cores per socket, n threads per core). Returns
    lcore numbers as strings; ValueError when the DUT has too few."""
    pool = [c for c in cpus if socket < 0 or c.socket == socket]
    if config.lower() == "all":
        return [str(c.thread) for c in pool]
    match = _CORE_CONFIG.match(config.strip())
    if match is None:
        raise ValueError(f"core config {config!r}: valid are 'all' or '<n>S/<n>C/<n>T'")
    n_sock, n_core, n_thread = (int(g) for g in match.groups())
    sockets = sorted({c.socket for c in pool})
    if len(sockets) < n_sock:
        raise ValueError(f"core config {config}: the DUT has {len(sockets)} socket(s)")
    picked: list[str] = []
    for sock in sockets[:n_sock]:
        cores: dict[int, list[Lcore]] = {}
        for c in pool:
            if c.socket == sock:
                cores.setdefault(c.core, []).append(c)
        order = sorted(cores, reverse=from_last)
        usable = [k for k in order if len(cores[k]) >= n_thread]
        if len(usable) < n_core:
            raise ValueError(f"core config {config}: socket {sock} has {len(usable)} "
                             f"core(s) with {n_thread} thread(s)")
        for thread_idx in range(n_thread):  # legacy order: first threads, then siblings
            picked += [str(cores[k][thread_idx].thread) for k in usable[:n_core]]
    return picked


def core_ranges(cores: Sequence[int | str]) -> str:
    """``-l`` syntax for lcores (pure): ``[1, 2, 3, 5]`` -> ``"1-3,5"``."""
    nums = sorted({int(c) for c in cores})
    parts: list[str] = []
    start = prev = None
    for n in nums:
        if prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
        start = prev = n
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ",".join(parts)


def eal_parameters(core_list: Sequence[int | str], *, memory_channels: int,
                   port_pcis: Sequence[str], prefix: str, no_pci: bool = False,
                   ports: Sequence[int | str] = (), b_ports: Sequence[int | str] = (),
                   port_options: Mapping[int | str, str] | None = None,
                   vdevs: Sequence[str] = (), other_eal_param: str = "") -> str:
    """The legacy ``create_eal_parameters`` string (pure): ``-l``, ``-n``, the allow list
    (``ports``: indexes into ``port_pcis`` or PCI addresses; none given and no ``-a``/
    ``-b``/``--no-pci``: every port), ``-b``, ``--file-prefix``, ``--no-pci``, ``--vdev``
    each, then ``other_eal_param``."""
    options = dict(port_options or {})

    def pci(port: int | str) -> str:
        if isinstance(port, int):
            if not 0 <= port < len(port_pcis):
                raise ValueError(f"port {port}: the DUT has {len(port_pcis)} port(s)")
            return port_pcis[port]
        return port

    def allow(port: int | str) -> str:
        extra = options.get(port, "")
        return f"-a {pci(port)}" + (f",{extra}" if extra else "")

    explicit = bool(ports or b_ports or no_pci) or any(
        opt in f" {other_eal_param} " for opt in (" -a ", " -b ", " --no-pci"))
    allowed = [allow(p) for p in ports] if explicit else [f"-a {p}" for p in port_pcis]
    parts = [f"-l {core_ranges(core_list)}", f"-n {memory_channels}", *allowed,
             *(f"-b {pci(p)}" for p in b_ports), f"--file-prefix={prefix}",
             "--no-pci" if no_pci else "", *(f"--vdev {v}" for v in vdevs), other_eal_param]
    return " ".join(p for p in parts if p)


def new_base_dir_name() -> str:
    """A fresh ``base_dir`` path for a guest's first shell to make with ``mkdir``, which
    fails on anything already there (a symlink too); the name is unguessable."""
    return f"{BASE_DIR_TEMPLATE.rstrip('X')}{secrets.token_hex(6)}"


def app_names(builds: Sequence[str], base_dir: str) -> dict[str, str]:
    """The legacy ``apps_name`` (pure): the installed programs' names and, for each example
    build directory ``<base_dir>/examples/<name>/build`` in ``builds``, ``<name>`` ->
    ``examples/<name>/build/<name>`` (relative to ``base_dir``)."""
    names = dict(INSTALLED_APPS)
    prefix = base_dir.rstrip("/") + "/examples/"
    for build in builds:
        path = build.rstrip("/")
        if not path.startswith(prefix) or not path.endswith("/build"):
            continue
        app = path[len(prefix):-len("/build")]
        if app and "/" not in app:
            names[app] = f"examples/{app}/build/{app}"
    return names


class _Runs(Protocol):
    name: str

    def run(self, argv: Sequence[str], *, timeout: float | None = 60.0, check: bool = False,
            input: bytes | None = None, env: Mapping[str, str] | None = None
            ) -> CommandResult: ...


class DtsDutApi:
    """Legacy DUT names about CPUs, DPDK apps and the working directory (see the module
    docstring). Needs ``run``, ``name``, ``get_memory_channels`` and ``_base_dir``."""

    _base_dir: str | None
    _base_owner: OwnedDir | None = None
    _cpus: list[Lcore] | None = None
    _prefix_suffix: str | None = None
    _eal_prefixes: tuple[str, ...] = ()  # handed out by create_eal_parameters, in order

    def _dts(self) -> Any:
        return self

    # -- ports (a guest's come from its DPDK API; a host DUT lists none) -------------------------
    @property
    def ports_info(self) -> list[dict[str, Any]]:
        """Legacy ``ports_info``: a guest's NICs (its DPDK API, later in the MRO); ``[]`` on
        a host DUT: the host's own NICs are never handed to tests (vhost-user ports and
        virtual devices take their place)."""
        found: list[dict[str, Any]] = getattr(super(), "ports_info", [])
        return found

    def get_ports(self, nic_type: str = "any", perf: Any = None,
                  socket: Any = None) -> list[int]:
        """Legacy ``get_ports``: indexes into :attr:`ports_info`."""
        nxt = getattr(super(), "get_ports", None)
        if nxt is not None:
            return list(nxt(nic_type, perf, socket))
        return list(range(len(self.ports_info)))

    # -- CPUs -----------------------------------------------------------------------------
    def _lcores(self) -> list[Lcore]:
        if self._cpus is None:
            out = self._dts().run(["cat", "/proc/cpuinfo"], timeout=30, check=True).stdout
            self._cpus = parse_cpuinfo(out)
        return self._cpus

    @property
    def cores(self) -> list[dict[str, str]]:
        """The legacy ``dut.cores``: ``[{"thread", "socket", "core"}, ...]`` (strings)."""
        return [c.as_legacy() for c in self._lcores()]

    def get_core_list(self, config: str = "all", socket: int = -1,
                      from_last: bool = False) -> list[str]:
        """Legacy ``get_core_list``: see :func:`select_cores` (core 0 is not bypassed)."""
        try:
            return select_cores(self._lcores(), config, socket, from_last)
        except ValueError as err:
            raise SessionError(f"{self._dts().name}: {err}") from None

    def get_numa_id(self, port_num: int) -> int:
        """The NUMA node of port ``port_num`` (its ``/sys/bus/pci`` entry; 0 when the port
        or the information is missing, as on one-node machines)."""
        ports = getattr(self, "ports_info", None) or []
        if not isinstance(port_num, int) or not 0 <= port_num < len(ports):
            return 0
        pci = str(ports[port_num].get("pci", ""))
        out = self._dts().run(["cat", f"/sys/bus/pci/devices/{pci}/numa_node"], timeout=30)
        text = out.stdout.strip()
        return int(text) if out.ok and text.lstrip("-").isdigit() and int(text) >= 0 else 0

    # -- EAL and apps -----------------------------------------------------------------------
    @property
    def prefix_subfix(self) -> str:
        """The legacy random part of EAL file prefixes (one per DUT)."""
        if self._prefix_suffix is None:
            self._prefix_suffix = secrets.token_hex(4)
        return self._prefix_suffix

    def create_eal_parameters(self, fixed_prefix: bool = False, socket: int | None = None,
                              cores: str | Sequence[int | str] = "default",
                              ports: Sequence[int | str] | None = None,
                              port_options: Mapping[int | str, str] | None = None,
                              prefix: str = "", no_pci: bool = False,
                              b_ports: Sequence[int | str] | None = None,
                              vdevs: Sequence[str] | None = None,
                              other_eal_param: str = "") -> str:
        """Legacy ``create_eal_parameters``: ``cores`` ``"default"`` is ``1S/2C/1T``; the
        file prefix is ``prefix`` (``dpdk`` if empty) plus this DUT's suffix unless
        ``fixed_prefix``. See :func:`eal_parameters`."""
        if isinstance(cores, str):
            config = "1S/2C/1T" if cores in ("", "default") else cores
            core_list: Sequence[int | str] = self.get_core_list(
                config, -1 if socket is None else socket)
        else:
            core_list = list(cores)
        if not prefix:
            file_prefix = f"dpdk_{self.prefix_subfix}"
        else:
            file_prefix = prefix if fixed_prefix else f"{prefix}_{self.prefix_subfix}"
        pcis = [str(p.get("pci", "")) for p in getattr(self, "ports_info", None) or []]
        try:
            eal = eal_parameters(
                core_list, memory_channels=self._dts().get_memory_channels(),
                port_pcis=pcis, prefix=file_prefix, no_pci=no_pci, ports=list(ports or []),
                b_ports=list(b_ports or []), port_options=port_options,
                vdevs=list(vdevs or []), other_eal_param=other_eal_param)
        except ValueError as err:
            raise SessionError(f"{self._dts().name}: create_eal_parameters: {err}") from None
        # only a plain name can be a runtime directory to remove (never "..", "a/b")
        if _PLAIN_NAME.fullmatch(file_prefix) and file_prefix not in (".", "..") and \
                file_prefix not in self._eal_prefixes:
            self._eal_prefixes = (*self._eal_prefixes, file_prefix)
        return eal

    @property
    def eal_prefixes(self) -> tuple[str, ...]:
        """The EAL file prefixes :meth:`create_eal_parameters` handed out (their runtime
        directories are removed when the DUT closes)."""
        return self._eal_prefixes

    @property
    def apps_name(self) -> dict[str, str]:
        """Legacy ``apps_name``: app key -> program path relative to :attr:`base_dir`, where
        the DUT's shells start (legacy: relative to the DPDK tree the DUT ``cd``-ed into), so
        both ``"./%s" % apps_name[k]`` and ``apps_name[k]`` run it there. Installed programs
        (``test-pmd`` -> ``dpdk-testpmd``, ...) are their names, found on ``PATH`` from any
        directory and linked into ``base_dir`` for the ``./`` form; examples built by
        :meth:`build_dpdk_apps` are ``examples/<name>/build/<name>`` under key ``<name>``.
        From elsewhere (``run``), use ``f"{dut.base_dir}/{dut.apps_name[k]}"``."""
        base = self.base_dir
        found = self._dts().run(["sh", "-c", _LINK_APPS, "sh", base, *INSTALLED_APPS.values()],
                                timeout=30).stdout
        return app_names(found.split(), base)

    @property
    def base_dir(self) -> str:
        """Legacy ``base_dir``: the DUT's working directory for a suite (a private
        directory made on first use, mode 0700; removed when the DUT closes, or by the DUT
        itself when this process dies without closing it)."""
        if self._base_dir is None:
            self._base_owner = OwnedDir.make(self._dts().session, BASE_DIR_TEMPLATE)
            self._base_dir = self._base_owner.path
        return self._base_dir

    def build_dpdk_apps(self, app: str, timeout: float = 600) -> str:
        """Legacy ``build_dpdk_apps("examples/<name>")``: build that DPDK example from the
        ``dpdk-doc`` package's sources (``/usr/share/dpdk/examples``, with ``make`` and
        ``pkg-config libdpdk``) into ``base_dir/examples/<name>``; returns the build output.

        A DUT without the tools whose :meth:`_build_host` has them (a guest: its VM's host
        DUT) gets the program built there and installed here with the libraries it lacks
        (:mod:`~pytest_dtsvirt.session.appbuild`). SessionError naming what is missing
        when neither can build it."""
        name = app.strip("/").split("/")[-1]
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise SessionError(f"build_dpdk_apps: not an example name: {app!r}")
        dts = self._dts()
        missing = self._missing_build_tools(name)
        if not missing:
            return self._make_example(name, f"{self.base_dir}/examples/{name}", timeout)
        host = self._build_host()
        host_missing = host._missing_build_tools(name) if host is not None else []
        if host is None or host_missing:
            where = f"; nor on {host.name}: {'; '.join(host_missing)}" if host else ""
            raise SessionError(f"{dts.name}: cannot build {app}: {'; '.join(missing)}{where}")
        dest = f"{self.base_dir}/examples/{name}"
        build_dir = host.run(["mktemp", "-d", f"{host.base_dir}/build-{name}.XXXXXXXX"],
                             timeout=30, check=True).stdout.strip()
        try:
            out: str = host._make_example(name, build_dir, timeout,
                                          ldflags=f"-Wl,-rpath,{dest}/build/lib")
            appbuild.install(host, f"{build_dir}/build/{name}", dts, f"{dest}/build")
        finally:
            host.run(["rm", "-rf", "--", build_dir], timeout=30)
        return out

    def _build_host(self) -> Any:
        """The DUT that builds DPDK examples for this one when it cannot (None: none)."""
        return None

    def _missing_build_tools(self, name: str) -> list[str]:
        src = f"{EXAMPLES_DIR}/{name}"
        check = self._dts().run(
            ["sh", "-c", 'test -f "$1/Makefile" || echo "no $1/Makefile (Debian package '
             'dpdk-doc)"; for t in make cc pkg-config; do command -v $t >/dev/null || echo '
             '"no $t"; done; command -v pkg-config >/dev/null && { pkg-config --exists libdpdk'
             ' || echo "no libdpdk.pc (Debian package dpdk-dev)"; }; exit 0', "sh", src],
            timeout=30)
        return [line for line in check.stdout.splitlines() if line.strip()]

    def _make_example(self, name: str, dest: str, timeout: float, ldflags: str = "") -> str:
        dts = self._dts()
        env = {"LDFLAGS": ldflags} if ldflags else None
        result = dts.run(["sh", "-c", 'mkdir -p "$2" && cp -r "$1"/. "$2" && make -C "$2" '
                          '2>&1', "sh", f"{EXAMPLES_DIR}/{name}", dest], timeout=timeout,
                         env=env)
        if not result.ok:
            raise SessionError(f"{dts.name}: building examples/{name} failed:\n"
                               f"{result.stdout[-3000:]}")
        return str(result.stdout)

    def _remove_eal_dirs(self) -> None:
        """Remove the EAL runtime directories (``/var/run/dpdk/<prefix>`` as root, else
        ``$XDG_RUNTIME_DIR`` or ``/tmp``, as EAL picks it) of the prefixes this DUT handed
        out; call it after ``kill_all``. A directory that a process still has a file of
        open (another user of a fixed prefix) is left, with a warning."""
        if not self._eal_prefixes:
            return
        dts = self._dts()
        out = dts.run(["sh", "-c", _REMOVE_EAL_DIRS, "sh", *self._eal_prefixes], timeout=60)
        for busy in out.stdout.split():
            log.warning("%s: EAL runtime directory %s is in use by a process this DUT did "
                        "not start: left in place", dts.name, busy)
        self._eal_prefixes = ()

    def _remove_base_dir(self) -> None:
        owner, self._base_owner = self._base_owner, None
        made, self._base_dir = self._base_dir, None
        if owner is not None:
            owner.remove()
        elif made is not None:  # made by a guest's first shell
            self._dts().run(["rm", "-rf", "--", made], timeout=30)


__all__ = ["DtsDutApi", "Lcore", "app_names", "core_ranges",
           "eal_parameters", "new_base_dir_name", "parse_cpuinfo", "select_cores"]
