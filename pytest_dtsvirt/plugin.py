"""The pytest entry point of pytest-dtsvirt (``pytest11``): options, ini keys, the ``vm``
marker, and the hooks that put VM diagnostics into reports and JUnit XML, keep VMs of failed
tests on request and hand each xdist worker its DUT. The fixtures live in
:mod:`pytest_dtsvirt.fixtures`.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from pytest_dtsvirt import secret
from pytest_dtsvirt.errors import ConfigError, VmStartError
from pytest_dtsvirt.fixtures import (
    DEMAND_KEY,
    KEPT_TITLE,
    REPORTS_KEY,
    SETTINGS_KEY,
    TEARDOWN_SECTIONS_KEY,
    USED_KEY,
    dut,
    dut_config,
    fresh_demand,
    function_vm_factory,
    session_vm,
    session_vm_dut,
    setup_check,
    vm,
    vm_dut,
    vm_factory,
)
from pytest_dtsvirt.guest import DEFAULT_SSH, SSH_SERVERS
from pytest_dtsvirt.marker import MARKER_HELP
from pytest_dtsvirt.vmfactory import Settings, diagnostics_of
from pytest_dtsvirt.xdist_duts import worker_id

log = logging.getLogger("pytest_dtsvirt")

ACCELS = ("auto", "kvm", "tcg")
KEEP = ("never", "failed", "always")
FRESH = ("restore", "boot")
#: (option, ini key, help, choices)
_OPTIONS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("--dtsvirt-conf-dir", "dtsvirt_conf_dir",
     "directory of the suite configs <suite>.cfg, the only one looked in when given "
     "(default: conf/ next to the test module if it holds <suite>.cfg, else conf/ in the "
     "rootdir)", ()),
    ("--dtsvirt-duts", "dtsvirt_duts",
     "DUT config file listing the DUTs; xdist worker gwN uses DUT N mod K "
     "(default: this host)", ()),
    ("--dtsvirt-accel", "dtsvirt_accel",
     "accelerator: auto (KVM if /dev/kvm and vmx/svm, else TCG), kvm or tcg (default: auto)",
     ACCELS),
    ("--dtsvirt-boot-timeout", "dtsvirt_boot_timeout",
     "seconds a guest may take to boot (default: the cfg's start wait_seconds, 120)", ()),
    ("--dtsvirt-keep-vm", "dtsvirt_keep_vm",
     "leave VMs running after the test: never, failed (VMs of failed tests) or always "
     "(default: never); the report says how to reach them", KEEP),
    ("--dtsvirt-hypervisor", "dtsvirt_hypervisor",
     "hypervisor backend (default: kvm; 'fake' is a no-op backend for testing the plugin)", ()),
    ("--dtsvirt-cache-dir", "dtsvirt_cache_dir",
     "cache of the built test guest image (default: the backend's, ~/.cache/pytest-dtsvirt)", ()),
    ("--dtsvirt-guest-ssh", "dtsvirt_guest_ssh",
     "SSH server of the default test guest: dropbear (reaches SSH about 0.7 s sooner) or openssh "
     "(with SFTP; for many commands at once on one guest session) (default: dropbear)",
     SSH_SERVERS),
    ("--dtsvirt-fresh", "dtsvirt_fresh",
     "how a test's fresh VM (vm, vm_dut, function_vm_factory) starts: restore (the first VM "
     "of a shape boots and is saved as a snapshot, later ones restore from it in about a "
     "second) or boot (always a cold boot) (default: restore)", FRESH),
)

__all__ = ["dut", "dut_config", "function_vm_factory", "session_vm", "session_vm_dut", "vm",
           "vm_dut", "vm_factory"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dtsvirt", "QEMU virtual machines as fixtures (pytest-dtsvirt)")
    for opt, ini, text, choices in _OPTIONS:
        kwargs: dict[str, Any] = {"choices": choices} if choices else {}
        group.addoption(opt, dest=ini, default=None, metavar=ini.upper().removeprefix("DTSVIRT_")
                        if not choices else None, help=text, **kwargs)
        parser.addini(ini, f"{text} [same as {opt}]", type="string", default="")


def _value(config: pytest.Config, ini: str) -> tuple[str | None, Path]:
    """The option if given (paths relative to the invocation dir), else the ini value
    (relative to the ini file's dir), else None."""
    opt = config.getoption(ini)
    if opt is not None:
        return str(opt), config.invocation_params.dir
    raw = config.getini(ini)
    value = raw.strip() if isinstance(raw, str) else ""
    base = config.inipath.parent if config.inipath is not None else config.rootpath
    return (value or None), base


def _path(config: pytest.Config, ini: str) -> str | None:
    value, base = _value(config, ini)
    return None if value is None else str((base / os.path.expanduser(value)).resolve())


def _choice(config: pytest.Config, ini: str, choices: tuple[str, ...], default: str) -> str:
    value = _value(config, ini)[0] or default
    if value not in choices:
        raise pytest.UsageError(f"{ini} = {value!r}: choose one of {', '.join(choices)}")
    return value


def settings_from(config: pytest.Config) -> Settings:
    """Resolve options and ini keys (an option wins over its ini key)."""
    timeout_text = _value(config, "dtsvirt_boot_timeout")[0]
    timeout: float | None = None
    if timeout_text is not None:
        try:
            timeout = float(timeout_text)
        except ValueError:
            timeout = -1.0
        if not timeout > 0:
            raise pytest.UsageError(
                f"dtsvirt_boot_timeout = {timeout_text!r}: a positive number of seconds")
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    run_id = workerinput.get("dtsvirt_run_id") or uuid.uuid4().hex[:12]
    return Settings(
        conf_dir=_path(config, "dtsvirt_conf_dir") or str(config.rootpath / "conf"),
        conf_dir_given=_path(config, "dtsvirt_conf_dir") is not None,
        duts_file=_path(config, "dtsvirt_duts"),
        accel=_choice(config, "dtsvirt_accel", ACCELS, "auto"),
        boot_timeout=timeout,
        keep_vm=_choice(config, "dtsvirt_keep_vm", KEEP, "never"),
        hypervisor=_value(config, "dtsvirt_hypervisor")[0] or "kvm",
        cache_dir=_path(config, "dtsvirt_cache_dir"),
        guest_ssh=_choice(config, "dtsvirt_guest_ssh", SSH_SERVERS, DEFAULT_SSH),
        fresh=_choice(config, "dtsvirt_fresh", FRESH, "restore"),
        run_id=str(run_id),
        worker=workerinput.get("workerid") or worker_id(),
    )


class _XdistHooks:
    """Registered only when pytest-xdist is active (its hook specs exist then)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["dtsvirt_run_id"] = self.run_id


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    settings = settings_from(config)
    config.stash[SETTINGS_KEY] = settings
    config.pluginmanager.register(_KeptSummary(), "dtsvirt-kept-summary")
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_XdistHooks(settings.run_id), "dtsvirt-xdist")


def pytest_report_header(config: pytest.Config) -> str:
    s = config.stash[SETTINGS_KEY]
    return (f"dtsvirt: hypervisor={s.hypervisor} accel={s.accel} conf-dir={s.conf_dir} "
            f"duts={s.duts_file or 'this host'} keep-vm={s.keep_vm} guest-ssh={s.guest_ssh} "
            f"run-id={s.run_id}")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Count the fresh-VM demand of the selected tests (a snapshot hint, see
    ``fixtures.fresh_demand``); with xdist each worker counts the whole selection."""
    session.config.stash[DEMAND_KEY] = fresh_demand(session.items)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Marker misuse fails the test at setup with a message, before any VM boots."""
    try:
        setup_check(item, list(getattr(item, "fixturenames", ())))
    except ConfigError as err:
        pytest.fail(f"ConfigError: {err}", pytrace=False)


def _start_errors(excinfo: pytest.ExceptionInfo[BaseException] | None) -> list[VmStartError]:
    found: list[VmStartError] = []
    err: BaseException | None = excinfo.value if excinfo is not None else None
    while err is not None and len(found) < 5:
        if isinstance(err, VmStartError) and err not in found:
            found.append(err)
        err = getattr(err, "dtsvirt_cause", None) or err.__cause__ or err.__context__
    return found


def _label(vm: Any) -> str:
    return f"{vm.vm_name} ({vm.suite})"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Record each phase's report on the item for the fixture teardowns, which decide
    (keep-on-failure, a dead VM) and act (pytest's tmpdir.py pattern); put what they
    prepared on the teardown report. A failed report gets the VMs' diagnostics: they must
    be on that very report, the one shown and written to JUnit XML."""
    report: pytest.TestReport = yield
    item.stash.setdefault(REPORTS_KEY, {})[report.when] = report
    if report.failed:
        for err in _start_errors(call.excinfo)[:1]:
            for title, text in err.diagnostics.items():
                report.sections.append((f"dtsvirt boot failure: {title}", text))
        for vm_ in item.stash.get(USED_KEY, []):
            for title, text in diagnostics_of(vm_).items():
                if title != "reach":
                    report.sections.append((f"dtsvirt {_label(vm_)}: {title}", text))
    if report.when == "teardown":
        prepared: list[tuple[str, str]] = item.stash.get(TEARDOWN_SECTIONS_KEY, [])
        report.sections.extend(prepared)
    _mask_report(report)
    return report


def _mask_report(report: pytest.TestReport) -> None:
    """No registered secret (a password) in what the terminal, JUnit XML or a later hook
    sees: the traceback (its source lines show a marker's arguments), the sections
    (captured output, logs, diagnostics) and the recorded properties."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # a skip: (path, line, reason)
        report.longrepr = (longrepr[0], longrepr[1], secret.mask(longrepr[2]))
    elif longrepr is not None and secret.contains_secret(text := str(longrepr)):
        report.longrepr = secret.mask(text)
    report.sections = [(secret.mask(title), secret.mask(text))
                       for title, text in report.sections]
    report.user_properties = [
        (name, secret.mask(str(value)) if secret.contains_secret(str(value)) else value)
        for name, value in report.user_properties]


class _KeptSummary:
    """Collects "kept running" report sections (also those of xdist workers, which arrive as
    reports on the controller) and lists them at the end of the run."""

    def __init__(self) -> None:
        self.kept: dict[tuple[str, str], str] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for title, text in report.sections:
            if title.startswith("dtsvirt ") and title.endswith(KEPT_TITLE):
                label = title[len("dtsvirt "):-len(KEPT_TITLE)]
                self.kept.setdefault((label, text), report.nodeid)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.kept:
            return
        terminalreporter.section("dtsvirt: VMs left running")
        for (label, reach), nodeid in self.kept.items():
            terminalreporter.write_line(f"{label}, kept by {nodeid}: {reach}")
