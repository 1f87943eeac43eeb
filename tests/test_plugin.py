"""The pytest layer (plugin, fixtures, marker, xdist assignment) with the fake backend.

Runs inner pytest sessions with ``pytester``; the fake backend (pytest_dtsvirt.testing.fake)
writes a JSON-lines journal so the outer test sees every set_vm_param/start/stop.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from pytest_dtsvirt import marker as marker_mod
from pytest_dtsvirt.errors import ConfigError
from pytest_dtsvirt.testing.fake import FAIL_ENV, JOURNAL_ENV
from pytest_dtsvirt.xdist_duts import assign, worker_id, worker_index

pytest_plugins = ["pytester"]

FAKE = ("--dtsvirt-hypervisor", "fake", "-p", "no:cacheprovider")


@pytest.fixture
def journal(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = pytester.path / "journal.jsonl"
    monkeypatch.setenv(JOURNAL_ENV, str(path))
    monkeypatch.delenv(FAIL_ENV, raising=False)
    return path


def events(path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in records if kind is None or r["event"] == kind]


# ---- pure: marker ---------------------------------------------------------------------------

def test_marker_conversions_and_order() -> None:
    req = marker_mod.parse_marker(
        ("vm1",), {"mem": {"size": 1024, "hugepage": False},
                   "device": [{"driver": "virtio-net-pci", "opt_mac": "00:00:20:00:00:20"},
                              {"driver": "vhost-user", "opt_path": "/tmp/s"}],
                   "qga": {"enable": True}})
    assert req.name == "vm1" and req.suite is None
    assert req.calls() == [
        ("mem", {"size": "1024", "hugepage": "no"}),
        ("device", {"driver": "virtio-net-pci", "opt_mac": "00:00:20:00:00:20"}),
        ("device", {"driver": "vhost-user", "opt_path": "/tmp/s"}),
        ("qga", {"enable": "yes"}),
    ]
    assert hash(req) == hash(marker_mod.parse_marker(("vm1",), {
        "mem": {"size": "1024", "hugepage": "no"},
        "device": [{"driver": "virtio-net-pci", "opt_mac": "00:00:20:00:00:20"},
                   {"driver": "vhost-user", "opt_path": "/tmp/s"}],
        "qga": {"enable": "yes"}}))


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((), {"memory": {"size": 1}}, "unknown VM parameter memory; allowed: name, suite, "),
    ((), {"mem": {"size": 1.5}}, "value 1.5 has type float; allowed: str, int, bool"),
    ((), {"mem": "size=1024"}, "an entry must be a dict of options"),
    ((), {"mem": []}, "@pytest.mark.vm mem: empty list"),
    ((), {"mem": {}}, "needs at least one option"),
    ((), {"mem": {3: "x"}}, "option names must be non-empty strings, got 3"),
    ((), {"name": 3}, "name must be a non-empty str"),
    (("vm0", "s", "x"), {}, "at most 2 positional arguments"),
    (("vm0",), {"name": "vm1"}, "multiple values for 'name'"),
])
def test_marker_misuse(args: tuple[Any, ...], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        marker_mod.parse_marker(args, kwargs, where="t.py::test_x")
    assert message in str(info.value)
    assert str(info.value).startswith("t.py::test_x")  # names the test
    assert "@pytest.mark.vm" in str(info.value)


def test_marker_merge_farthest_first() -> None:
    module = marker_mod.parse_marker((), {"suite": "s1", "mem": {"size": 512},
                                          "device": {"driver": "virtio-net-pci"}})
    other = marker_mod.parse_marker(("vm1",), {"mem": {"size": 64}})
    func = marker_mod.parse_marker((), {"mem": {"size": 2048}, "device": {"driver": "vfio-pci",
                                                                           "opt_host": "1:0.0"}})
    merged = marker_mod.merge([module, other, func], "vm0")
    assert merged.suite == "s1"
    assert [k for k, _ in merged.calls()] == ["mem", "device", "mem", "device"]
    assert merged.calls()[-2] == ("mem", {"size": "2048"})
    assert marker_mod.is_appending("device") and marker_mod.is_appending("net")
    assert not marker_mod.is_appending("mem") and not marker_mod.is_appending("cpu")


def test_default_suite() -> None:
    assert marker_mod.default_suite("tests.test_vxlan_sample") == "vxlan_sample"
    assert marker_mod.default_suite("vxlan") == "vxlan"
    assert marker_mod.default_suite("tests.test_x", "custom") == "custom"
    with pytest.raises(ConfigError, match="dtsvirt_suite must be a non-empty str"):
        marker_mod.default_suite("m", 3)


# ---- pure: xdist assignment -----------------------------------------------------------------

def test_worker_index() -> None:
    assert worker_index(None) == 0
    assert worker_index("master") == 0
    assert worker_index("gw0") == 0
    assert worker_index("gw7") == 7
    assert worker_index("gw12") == 12
    with pytest.raises(ValueError, match="not an xdist worker id"):
        worker_index("gwx")
    assert worker_id({"PYTEST_XDIST_WORKER": "gw3"}) == "gw3"
    assert worker_id({}) is None


def test_assign_modulo() -> None:
    duts = ["a", "b", "c"]
    assert assign(duts, None) == "a"
    assert [assign(duts, f"gw{n}") for n in range(7)] == ["a", "b", "c", "a", "b", "c", "a"]
    assert assign(["only"], "gw5") == "only"
    with pytest.raises(ValueError, match="empty"):
        assign([], "gw0")


# ---- inner sessions: options, fixtures, markers --------------------------------------------

def test_help_lists_options_and_ini(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    out = result.stdout.str()
    for opt in ("--dtsvirt-conf-dir", "--dtsvirt-duts", "--dtsvirt-accel",
                "--dtsvirt-boot-timeout", "--dtsvirt-keep-vm", "--dtsvirt-hypervisor",
                "--dtsvirt-cache-dir", "--dtsvirt-guest-ssh"):
        assert opt in out
        assert opt.lstrip("-").replace("-", "_") in out  # the ini key
    assert "{auto,kvm,tcg}" in out and "{never,failed,always}" in out
    assert "{dropbear,openssh}" in out


def test_fixtures_documented(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    out = pytester.runpytest("--fixtures").stdout.str()
    for name, doc in [("dut_config", "worker ``gwN`` takes"), ("dut", "connected for the whole"),
                      ("vm_factory", "vm_factory.create"),
                      ("function_vm_factory", "markers apply"),
                      ("vm", "A fresh, started VM"), ("vm_dut", "The guest DUT of ``vm``"),
                      ("session_vm", "shared by every test"),
                      ("session_vm_dut", "The guest DUT of ``session_vm``")]:
        assert f"{name} [" in out or f"{name} --" in out, name
        assert doc in out, name


def test_markers_listed_and_strict(pytester: pytest.Pytester, journal: Path) -> None:
    assert "@pytest.mark.vm(name='vm0', suite=None, **params)" in \
        pytester.runpytest("--markers").stdout.str()
    pytester.makepyfile(test_strict="""
        import pytest
        @pytest.mark.vm(mem={"size": 1024})
        def test_a(vm):
            assert vm.params["mem"] == [{"size": "1024"}]
    """)
    pytester.runpytest("--strict-markers", *FAKE).assert_outcomes(passed=1)


def test_options_override_ini_and_validate(pytester: pytest.Pytester) -> None:
    pytester.makeini("""
        [pytest]
        dtsvirt_accel = kvm
        dtsvirt_keep_vm = failed
        dtsvirt_conf_dir = myconf
        dtsvirt_guest_ssh = openssh
    """)
    pytester.makepyfile("def test_x(): pass")
    out = pytester.runpytest("--dtsvirt-accel", "tcg").stdout.str()
    assert "accel=tcg" in out and "keep-vm=failed" in out and "guest-ssh=openssh" in out
    out = pytester.runpytest("--dtsvirt-guest-ssh", "dropbear").stdout.str()
    assert "guest-ssh=dropbear" in out
    assert f"conf-dir={pytester.path / 'myconf'}" in out
    result = pytester.runpytest("--dtsvirt-boot-timeout", "-3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "a positive number of seconds" in result.stderr.str()
    pytester.makeini("[pytest]\ndtsvirt_keep_vm = sometimes\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "choose one of never, failed, always" in result.stderr.str()


def test_marker_merge_add_and_replace(pytester: pytest.Pytester, journal: Path) -> None:
    pytester.makepyfile(test_merge="""
        import pytest
        pytestmark = pytest.mark.vm(device={"driver": "virtio-net-pci", "opt_mac": "m1"},
                                    cpu={"model": "host", "number": 4})

        class TestC:
            @pytest.mark.vm(device=[{"driver": "vhost-user", "opt_path": "/s", "opt_mac": "m2"}],
                            mem={"size": 2048, "hugepage": True}, cpu={"number": 2},
                            net={"type": "user", "opt_hostfwd": "tcp:127.0.0.1:5555-:80"})
            def test_a(self, vm):
                assert vm.calls == [
                    ("device", {"driver": "virtio-net-pci", "opt_mac": "m1"}),
                    ("cpu", {"model": "host", "number": "4"}),
                    ("device", {"driver": "vhost-user", "opt_path": "/s", "opt_mac": "m2"}),
                    ("mem", {"size": "2048", "hugepage": "yes"}),
                    ("cpu", {"number": "2"}),
                    ("net", {"type": "user", "opt_hostfwd": "tcp:127.0.0.1:5555-:80"}),
                ]
                assert [d["driver"] for d in vm.params["device"]] == [
                    "virtio-net-pci", "vhost-user"]
                assert vm.params["cpu"] == [{"number": "2"}]          # replaced
                assert vm.params["mem"] == [{"size": "2048", "hugepage": "yes"}]
                assert len(vm.params["net"]) == 3                      # 2 defaults + 1

        def test_module_marker_only(vm):
            assert vm.params["cpu"] == [{"model": "host", "number": "4"}]
            assert len(vm.params["device"]) == 1
    """)
    pytester.runpytest(*FAKE).assert_outcomes(passed=2)
    sets = events(journal, "set")
    assert len(sets) == 6 + 2
    assert all(isinstance(v, str) for s in sets for v in s["options"].values())


def test_misuse_fails_at_setup_with_message(pytester: pytest.Pytester, journal: Path) -> None:
    pytester.makepyfile(test_misuse="""
        import pytest
        @pytest.mark.vm(memory={"size": 1024})
        def test_unknown_key(vm):
            pass

        @pytest.mark.vm(mem={"size": 1.5})
        def test_bad_type(vm):
            pass

        @pytest.mark.vm(mem={"size": 1024})
        def test_marker_with_session_vm(session_vm):
            pass

        @pytest.mark.vm(mem={"size": [1]})
        def test_bad_type_without_vm_fixture():
            pass
    """)
    result = pytester.runpytest("-rE", *FAKE)
    result.assert_outcomes(errors=4)
    out = result.stdout.str()
    assert "unknown VM parameter memory; allowed: name, suite, enable_kvm" in out
    assert "value 1.5 has type float; allowed: str, int, bool" in out
    assert "@pytest.mark.vm does not apply to session_vm/session_vm_dut" in out
    assert "value [1] has type list" in out
    assert "fixtures.py" not in out and "marker.py" not in out  # no deep traceback
    assert events(journal, "start") == []  # nothing booted


def test_suite_name_defaulting(pytester: pytest.Pytester, journal: Path) -> None:
    pytester.makepyfile(
        test_alpha="""
            import pytest
            def test_default(vm):
                assert vm.suite == "alpha" and vm.vm_name == "vm0"
            @pytest.mark.vm(suite="gamma")
            def test_marker(vm):
                assert vm.suite == "gamma"
            @pytest.mark.vm(name="vm3")
            def test_marker_name(vm, vm_dut):
                assert vm.vm_name == "vm3" and vm_dut.name == "alpha/vm3"
        """,
        beta_checks="""
            dtsvirt_suite = "beta"
            def test_attribute(vm, session_vm):
                assert vm.suite == "beta" and session_vm.suite == "beta"
        """)
    pytester.runpytest("beta_checks.py", "test_alpha.py", *FAKE).assert_outcomes(passed=4)
    assert sorted((e["suite"], e["vm"]) for e in events(journal, "started")) == [
        ("alpha", "vm0"), ("alpha", "vm3"), ("beta", "vm0"), ("beta", "vm0"), ("gamma", "vm0")]
    assert len(events(journal, "stop")) == 5


def test_function_vms_fresh_session_vm_shared(pytester: pytest.Pytester, journal: Path) -> None:
    pytester.makepyfile(test_scopes="""
        import pytest
        BOOTS = []
        @pytest.mark.parametrize("i", range(3))
        def test_fresh(vm_dut, i):
            BOOTS.append(("f", vm_dut.boot_id))
        @pytest.mark.parametrize("i", range(3))
        def test_shared(session_vm_dut, i):
            BOOTS.append(("s", session_vm_dut.boot_id))
        def test_check():
            fresh = {b for k, b in BOOTS if k == "f"}
            shared = {b for k, b in BOOTS if k == "s"}
            assert len(fresh) == 3 and len(shared) == 1 and not fresh & shared
        def test_factory(function_vm_factory, vm_factory):
            a = function_vm_factory.start("vm0")
            b = function_vm_factory.create("vm1", mem={"size": 256})
            assert b.guest is None and b.params["mem"] == [{"size": "256"}]
            function_vm_factory.boot(b)
            assert function_vm_factory.guest(b).name == "scopes/vm1"
            assert function_vm_factory.vms == (a, b)
            c = vm_factory.start("vm2", suite="other")
            assert c in vm_factory.vms
    """)
    pytester.runpytest("-p", "no:randomly", *FAKE).assert_outcomes(passed=8)
    started = events(journal, "started")
    assert len(started) == 3 + 1 + 2 + 1
    stops = events(journal, "stop")
    assert len(stops) == len(started)
    # the function-scoped VMs stop at their test's end, the session ones at session end
    assert [e["event"] for e in events(journal) if e["event"] in ("started", "stop")][:6] == \
        ["started", "stop"] * 3


def test_report_sections_and_junit_properties(pytester: pytest.Pytester,
                                              journal: Path) -> None:
    pytester.makepyfile(test_report="""
        def test_fails(vm):
            assert False, "the guest said no"
        def test_passes(vm, session_vm):
            pass
    """)
    xml_path = pytester.path / "junit.xml"
    result = pytester.runpytest(f"--junitxml={xml_path}", *FAKE)
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    for title in ("argv", "console tail", "qemu log", "phase timings"):
        assert f"dtsvirt vm0 (report): {title}" in out
    assert "qemu-system-x86_64 -name vm0 -cpu model=qemu64,number=1" in out
    assert "Linux version 6.1 (fake vm0)" in out
    assert "kept running" not in out
    root = ET.parse(xml_path).getroot()
    props: dict[str, list[tuple[str, str]]] = {}
    for case in root.iter("testcase"):
        props[case.get("name", "")] = [(p.get("name", ""), p.get("value", ""))
                                       for p in case.iter("property")]
    assert ("dtsvirt.vm0.boot.qemu", "0.010") in props["test_fails"]
    assert ("dtsvirt.vm0.boot.ssh", "0.100") in props["test_fails"]
    # two VMs used (vm and session_vm): both recorded
    assert [n for n, _ in props["test_passes"]].count("dtsvirt.vm0.boot.agent") == 2


def test_keep_vm_on_failure(pytester: pytest.Pytester, journal: Path) -> None:
    pytester.makepyfile(test_keep="""
        def test_fails(vm):
            assert False
        def test_passes(vm):
            pass
    """)
    result = pytester.runpytest("--dtsvirt-keep-vm", "failed", *FAKE)
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "dtsvirt vm0 (keep): kept running" in out
    assert "ssh -p 22222 root@127.0.0.1" in out
    assert "dtsvirt: VMs left running" in out
    assert "vm0 (keep), kept by test_keep.py::test_fails" in out
    started = events(journal, "started")
    stopped_ids = {e["id"] for e in events(journal, "stop")}
    assert len(started) == 2 and len(stopped_ids) == 1
    assert started[0]["id"] not in stopped_ids  # the failed test's VM is still "running"
    assert started[1]["id"] in stopped_ids
    assert [e["id"] for e in events(journal, "keep")] == [started[0]["id"]]


def test_keep_vm_never_stops_all(pytester: pytest.Pytester, journal: Path) -> None:
    pytester.makepyfile(test_keep="def test_fails(vm):\n    assert False\n")
    result = pytester.runpytest(*FAKE)
    result.assert_outcomes(failed=1)
    assert "kept running" not in result.stdout.str()
    assert len(events(journal, "stop")) == 1


def test_boot_failure_memoized(pytester: pytest.Pytester, journal: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAIL_ENV, "vm0")
    pytester.makepyfile(test_boot="""
        import pytest
        @pytest.mark.parametrize("i", range(3))
        def test_function(vm, i):
            pass
        @pytest.mark.parametrize("i", range(2))
        def test_session(session_vm, i):
            pass
        @pytest.mark.vm(mem={"size": 64})
        def test_other_params_boot_again(vm):
            pass
        @pytest.mark.vm(name="vm1")
        def test_other_vm_boots(vm):
            pass
    """)
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest("-p", "no:randomly", f"--junitxml={junit}", *FAKE)
    result.assert_outcomes(errors=6, passed=1)
    out = result.stdout.str()
    # vm0 with no params: one attempt shared by 3 function tests and the 2 session tests;
    # vm0 with other params: its own attempt; vm1 boots fine
    starts = [(e["vm"], e["suite"]) for e in events(journal, "start")]
    assert starts == [("vm0", "boot"), ("vm0", "boot"), ("vm1", "boot")]
    errors = {case.get("name"): case.find("error") for case in
              ET.parse(junit).iter("testcase")}
    texts = {name: (err.get("message", "") + (err.text or "")) for name, err in errors.items()
             if err is not None}
    assert sorted(texts) == ["test_function[0]", "test_function[1]", "test_function[2]",
                             "test_other_params_boot_again", "test_session[0]",
                             "test_session[1]"]
    assert all("qemu exited with status 1 (fake)" in text for text in texts.values())
    memoized = [name for name, text in texts.items() if
                "failed to boot earlier in this session (test_boot.py::test_function[0])" in text]
    assert sorted(memoized) == ["test_function[1]", "test_function[2]", "test_session[0]",
                                "test_session[1]"]
    assert "dtsvirt boot failure: qemu log" in out
    assert "Could not open '/nonexistent.img'" in out


def test_xdist_workers_take_their_dut(pytester: pytest.Pytester, journal: Path) -> None:
    duts = pytester.path / "duts.cfg"
    duts.write_text("[duta]\nhost = local\n\n[dutb]\nhost = local\n")
    out_dir = pytester.path / "out"
    out_dir.mkdir()
    pytester.makepyfile(test_xd=f"""
        import os, pytest
        OUT = {str(out_dir)!r}
        @pytest.mark.parametrize("i", range(4))
        def test_where(dut, dut_config, vm, i):
            worker = os.environ["PYTEST_XDIST_WORKER"]
            assert dut.name == dut_config.name
            with open(os.path.join(OUT, f"{{worker}}-{{i}}"), "w") as f:
                f.write(dut.name)
    """)
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "each", f"--dtsvirt-duts={duts}",
                                           *FAKE)
    result.assert_outcomes(passed=8)
    seen = {p.name: p.read_text() for p in out_dir.iterdir()}
    assert len(seen) == 8
    assert {v for k, v in seen.items() if k.startswith("gw0-")} == {"duta"}
    assert {v for k, v in seen.items() if k.startswith("gw1-")} == {"dutb"}
    # the fake saw each VM on the worker's DUT; one run id for all workers
    started = events(journal, "started")
    assert {(e["worker"], e["dut"]) for e in started} == {("gw0", "duta"), ("gw1", "dutb")}
    assert len({e["run_id"] for e in started}) == 1 and started[0]["run_id"]
    for p in out_dir.iterdir():
        p.unlink()
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "loadgroup",
                                           f"--dtsvirt-duts={duts}", *FAKE)
    result.assert_outcomes(passed=4)
    for name, value in ((p.name, p.read_text()) for p in out_dir.iterdir()):
        assert value == {"gw0": "duta", "gw1": "dutb"}[name.split("-")[0]]


def test_bad_dut_file_and_backend_fail_with_message(pytester: pytest.Pytester,
                                                    journal: Path) -> None:
    pytester.makepyfile(test_bad="def test_a(vm):\n    pass\n")
    result = pytester.runpytest("--dtsvirt-duts=missing.cfg", *FAKE)
    result.assert_outcomes(errors=1)
    assert "ConfigError" in result.stdout.str()
    assert "cannot read DUT config" in result.stdout.str()
    result = pytester.runpytest("--dtsvirt-hypervisor=nope", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    assert "unknown hypervisor 'nope'; registered:" in result.stdout.str()
