"""``dut.apps_name`` works with the legacy idioms: ``"./%s" % apps_name[k]``, ``"./" +
apps_name[k]`` and ``apps_name[k]`` typed into any of the DUT's shells (they start in
``base_dir``, which the values are relative to, as legacy's DPDK tree)."""

from __future__ import annotations

import shutil

import pytest

from pytest_dtsvirt.session.dtsapi import INSTALLED_APPS, app_names
from pytest_dtsvirt.session.dut import Dut

BASE = "/tmp/dtsvirt-base.abc"


@pytest.mark.parametrize(("builds", "expected"), [
    ([], {}),
    ([f"{BASE}/examples/l3fwd-power/build"],
     {"l3fwd-power": "examples/l3fwd-power/build/l3fwd-power"}),
    ([f"{BASE}/examples/helloworld/build/", f"{BASE}/examples/vhost/build"],
     {"helloworld": "examples/helloworld/build/helloworld",
      "vhost": "examples/vhost/build/vhost"}),
    # not of this base_dir, not a build directory, a nested path: ignored
    (["/elsewhere/examples/x/build", f"{BASE}/examples/x/obj", f"{BASE}/examples/a/b/build"],
     {}),
])
def test_app_names_are_relative_to_base_dir(builds: list[str],
                                            expected: dict[str, str]) -> None:
    names = app_names(builds, BASE + "/")
    assert names == {**INSTALLED_APPS, **expected}
    for value in names.values():
        assert not value.startswith("/")  # "./" + value must stay a path in base_dir


@pytest.mark.skipif(shutil.which("dpdk-testpmd") is None,
                    reason="dpdk-testpmd missing (Debian package dpdk-dev)")
@pytest.mark.parametrize("form", ["./%s", "./{}", "{}"])
def test_legacy_idioms_run_testpmd_in_every_shell(dut: Dut, form: str) -> None:
    path = dut.apps_name["test-pmd"]
    cmd = form % path if "%s" in form else form.format(path)
    assert dut.base_dir  # the shells below are there
    for shell in (dut.shell, dut.new_session("suite"), dut.alt_session()):
        out = shell.send_expect(f"{cmd} -h 2>&1 | grep -m1 Usage:; echo rc=$?", "# ", 60)
        assert "Usage:" in out and "dpdk-testpmd [options]" in out and "rc=0" in out, out
    # the legacy DUT's other use: the program's name
    assert path.split("/")[-1] == "dpdk-testpmd"
