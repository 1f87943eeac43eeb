"""The compat names test_compat_units.py does not cover, against the legacy semantics (read in
the legacy pmd_output.py, test_case.py, virt_base.py, qemu_kvm.py and framework/utils.py):
one table per group. Pure code and fakes; no guest boots.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

import pytest_dtsvirt.compat.utils as utils
from pytest_dtsvirt.compat import LegacyVM, PmdOutput, TestCase
from pytest_dtsvirt.errors import VmError

# -- framework.utils ----------------------------------------------------------------------------


@pytest.mark.parametrize(("indexes", "mask"), [
    ([0], "0x1"), ([0, 1, 3], "0xb"), (["1", "2"], "0x6"), ([], "0x0"), ([63], hex(1 << 63)),
])
def test_create_mask(indexes: list[Any], mask: str) -> None:
    assert utils.create_mask(indexes) == mask


@pytest.mark.parametrize(("fn", "colour"), [(utils.RED, "31"), (utils.GREEN, "32")])
def test_colours_wrap_the_text(fn: Any, colour: str) -> None:
    text = fn("result")
    assert text.startswith("\x1b[") and colour in text.split("m", 1)[0]
    assert "result" in text and text.endswith("\x1b[0m")


# -- PmdOutput readers (legacy: regexes on "show port info N") -----------------------------------

PORT_INFO = """
********************* Infos for port 0  *********************
MAC address: 00:00:20:00:00:20
Device name: net_vhost0
Driver name: net_vhost
Connect to socket: 1
memory allocation on the socket: 0
Link status: up
Link speed: 10 Gbps
Link duplex: full-duplex
Promiscuous mode: enabled
Allmulticast mode: disabled
"""


class _Session:
    """Answers ``show port info N`` with canned text (a link that is down ``down`` times)."""

    def __init__(self, down: int = 0) -> None:
        self.sent: list[str] = []
        self.down = down
        self.before = "late output"

    def send_expect(self, cmd: str, expected: str, timeout: float) -> str:
        self.sent.append(cmd)
        if self.down > 0:
            self.down -= 1
            return PORT_INFO.replace("Link status: up", "Link status: down")
        return PORT_INFO

    def get_session_before(self, timeout: float = 15) -> str:
        return self.before


class _Dut:
    pass


def _pmd(session: _Session) -> PmdOutput:
    return PmdOutput(_Dut(), session)


@pytest.mark.parametrize(("call", "args", "expected"), [
    ("get_port_mac", (0,), "00:00:20:00:00:20"),
    ("get_port_link_status", (0,), "up"),
    ("get_port_link_speed", (0,), "10"),
    ("get_port_connect_socket", (0,), "1"),
    ("get_port_promiscuous_mode", (0,), "enabled"),
    ("get_detail_from_port_info", ("Driver name: ", r"\S+", 0), "net_vhost"),
    ("get_detail_from_port_info", ("Firmware-version: ", r"\S.*", 0), " "),  # legacy "absent"
])
def test_port_info_readers(call: str, args: tuple[Any, ...], expected: str) -> None:
    session = _Session()
    assert getattr(_pmd(session), call)(*args) == expected
    assert session.sent == [f"show port info {args[-1]}"]


@pytest.mark.parametrize(("call", "args", "expected"), [
    ("get_value_from_string", ("Link speed: ", r"\d+", PORT_INFO), "10"),
    ("get_value_from_string", ("Link speed: ", r"[a-z]+", PORT_INFO), " "),
    ("get_all_value_from_string", ("mode: ", r"\S+", PORT_INFO), ["enabled", "disabled"]),
    ("get_all_value_from_string", ("nothing: ", r"\S+", PORT_INFO), []),
    ("get_pmd_value", ("RX-packets:", "  RX-packets: 17  RX-missed: 0"), 17),
    ("get_pmd_value", ("TX-packets:", "  RX-packets: 17"), None),
])
def test_string_readers(call: str, args: tuple[Any, ...], expected: Any) -> None:
    assert getattr(_pmd(_Session()), call)(*args) == expected


def test_get_output_is_what_the_session_printed_since() -> None:
    assert _pmd(_Session()).get_output(timeout=0) == "late output"


@pytest.mark.parametrize(("down", "timeout", "expected"), [(0, 1, True), (2, 5, True),
                                                           (1000, 1, False)])
def test_wait_link_status_up_polls_like_legacy(down: int, timeout: float,
                                               expected: bool) -> None:
    session = _Session(down)
    began = time.monotonic()
    assert _pmd(session).wait_link_status_up(0, timeout=timeout) is expected
    # legacy asked once a second; a tight loop would flood testpmd with "show port info"
    assert len(session.sent) <= 5 * timeout + 1, len(session.sent)
    if not expected:
        assert time.monotonic() - began >= timeout


# -- TestCase helpers ---------------------------------------------------------------------------


def _suite() -> TestCase:
    suite = TestCase.__new__(TestCase)
    suite.__dict__.update(_suite_cfg={"packet_sizes": [64]},
                          logger=logging.getLogger("dts.names"))
    return suite


def test_suite_cfg_updates_as_legacy() -> None:
    suite = _suite()
    suite.update_suite_cfg_ele("rounds", 3)
    assert suite.get_suite_cfg() == {"packet_sizes": [64], "rounds": 3}
    suite.update_suite_cfg({"only": True})
    assert suite.get_suite_cfg() == {"only": True}


@pytest.mark.parametrize(("passed", "skips"), [(True, False), (1, False), (False, True),
                                               (None, True), ("", True)])
def test_skip_case(passed: Any, skips: bool) -> None:
    suite = _suite()
    if skips:
        with pytest.raises(pytest.skip.Exception, match="no NIC here"):
            suite.skip_case(passed, "no NIC here")
    else:
        suite.skip_case(passed, "no NIC here")


def test_result_table_rows(caplog: pytest.LogCaptureFixture) -> None:
    suite = _suite()
    caplog.set_level(logging.INFO, logger="dts.names")
    suite.result_table_create(["Frame size", "Mpps"])
    suite.result_table_add([64, 1.5])
    suite.result_table_add([1518, 0.8])
    suite.result_table_print()
    assert suite.result_table_getrows() == [[64, 1.5], [1518, 0.8]]
    assert "64 | 1.5" in caplog.text and "Frame size | Mpps" in caplog.text


# -- LegacyVM names -----------------------------------------------------------------------------


class _Hv:
    """The plugin VM as a LegacyVM sees it: a hostfwd port once started, a death reason."""

    def __init__(self, port: int | None, died: str | None) -> None:
        self.hostfwd_port = port
        self._died = died

    def get_pci_mappings(self) -> list[dict[str, str]]:
        return [{"hostpci": "0000:08:10.0", "guestpci": "00:04.0"}]

    def death_reason(self) -> str | None:
        return self._died


def _legacy_vm(port: int | None = None, died: str | None = None,
               started: bool = False) -> LegacyVM:
    vm = LegacyVM.__new__(LegacyVM)
    vm.__dict__.update(vm_name="vm0", suite="s", params=[], _loaded=[],
                       hypervisor=_Hv(port, died), vm_dut=object() if started else None)
    return vm


@pytest.mark.parametrize(("started", "died", "alive"), [
    (False, None, False), (True, None, True),
    (True, "qemu (PID 7) died while the VM was in use: killed by signal 9", False),
])
def test_isalive_is_whether_qemu_runs(started: bool, died: str | None, alive: bool) -> None:
    # legacy: a ps of the host for this VM's qemu
    assert _legacy_vm(port=2222, died=died, started=started).isalive() is alive


def test_get_vm_ip_and_pci_mappings() -> None:
    vm = _legacy_vm(port=40022, started=True)
    assert vm.get_vm_ip() == vm.hostfwd_addr == "127.0.0.1:40022"  # legacy hostfwd net type
    assert vm.get_pci_mappings() == vm.pci_maps == [
        {"hostpci": "0000:08:10.0", "guestpci": "00:04.0"}]
    with pytest.raises(VmError, match="not started"):
        _legacy_vm().get_vm_ip()


def test_set_local_config_replaces_by_key() -> None:
    vm = _legacy_vm()
    vm.params = [{"cpu": [{"number": "2"}]}, {"mem": [{"size": "1024"}]}]
    local = [{"mem": [{"size": "2048"}]}, {"vnc": [{"displayNum": "1"}]}]
    vm.set_local_config(local)
    assert vm.params == [{"cpu": [{"number": "2"}]}, {"mem": [{"size": "2048"}]},
                         {"vnc": [{"displayNum": "1"}]}]
    local[0]["mem"][0]["size"] = "1"  # a copy: the caller's later edits do not leak in
    assert vm.params[1] == {"mem": [{"size": "2048"}]}
