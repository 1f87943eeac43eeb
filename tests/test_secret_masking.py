"""No password in any output (issue 9, deliverable 4).

An inner pytest run boots real guests: one with a marker password (the test fails, records
the password as a JUnit property, logs and prints it), one with a generated password and VNC,
and a marker with a wrong option next to a password; the DUT config has a password too. The
terminal output (live log at DEBUG, every report section), the JUnit XML (with logs) and the
log file are searched for every one of these secrets: zero hits, and the mask is there to
show the channels were exercised. Reprs and error messages of the config objects are checked
in-process.
"""

from __future__ import annotations

import pytest

from pytest_dtsvirt import secret
from pytest_dtsvirt.config.cfgfile import parse_cfg
from pytest_dtsvirt.config.load import call_origin, params_for_section
from pytest_dtsvirt.errors import ConfigError, VmError
from pytest_dtsvirt.marker import parse_marker
from pytest_dtsvirt.qemu.access import Access
from pytest_dtsvirt.session.dutconfig import parse_dut_configs

pytest_plugins = ["pytester"]

MARKER_PW = "Mk-S3cret-Pass9x"
DUT_PW = "DutPw-7h1s-1s-s3cr3t"
BAD_MARKER_PW = "BadMk-Pw-0nly-1n-4-m4rker"

CFG = """\
[vm0]
start =
    wait_seconds=180;
[vm1]
vnc =
    listen=127.0.0.1;
start =
    wait_seconds=180;
"""

INNER = f"""
import logging, os
import pytest

OUT = "@OUT@"
PW = {MARKER_PW!r}


@pytest.mark.vm(login={{"user": "root", "password": PW}})
def test_marker_password(vm, vm_dut, record_property):
    record_property("login", PW)
    logging.getLogger("suite").warning("logging in with %s", PW)
    print("the password is", PW)
    assert vm_dut.send_expect("echo up", "# ").strip().endswith("up")
    assert PW == "something else"


@pytest.mark.vm("vm1")
def test_generated_password_and_vnc(vm, vm_dut):
    with open(os.path.join(OUT, "generated"), "w") as f:
        f.write(vm._access.password + "\\n" + vm._access.vnc_password + "\\n")
    assert vm.vnc_display is not None
    print(vm.reach())


@pytest.mark.vm(login={{"password": {BAD_MARKER_PW!r}, "pasword": "x"}})
def test_bad_marker(vm):
    pass
"""


def test_no_password_in_terminal_junit_or_log_file(pytester: pytest.Pytester) -> None:
    out = pytester.path / "out"
    out.mkdir()
    conf = pytester.path / "conf"
    conf.mkdir()
    (conf / "masking.cfg").write_text(CFG)
    duts = pytester.path / "duts.cfg"
    duts.write_text(f"[dut0]\nhost = local\npassword = {DUT_PW}\n")
    pytester.makepyfile(test_masking=INNER.replace("@OUT@", str(out)))
    junit, log_file = out / "junit.xml", out / "log.txt"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:randomly", "--dtsvirt-accel", "tcg",
        f"--dtsvirt-conf-dir={conf}", f"--dtsvirt-duts={duts}", "-rA", "-v",
        f"--junitxml={junit}", "-o", "junit_logging=all", "-o", "junit_log_passing_tests=true",
        "-o", "log_cli=true", "--log-cli-level=DEBUG", f"--log-file={log_file}",
        "--log-file-level=DEBUG", "-l", timeout=600)
    result.assert_outcomes(passed=1, failed=1, errors=1)
    generated = (out / "generated").read_text().split()
    assert len(generated) == 2 and all(generated)
    texts = {"terminal": result.stdout.str() + result.stderr.str(),
             "junit": junit.read_text(), "log file": log_file.read_text()}
    for where, text in texts.items():
        for pw in (MARKER_PW, DUT_PW, BAD_MARKER_PW, *generated):
            assert pw not in text, f"a password in the {where}"
        assert secret.MASK in text, f"nothing masked in the {where}: channel not exercised?"
    # the channels were really there: the failure, the property, the log lines, the boot
    assert "dtsvirt vm0 (masking): qemu argv" in texts["terminal"]
    assert 'name="login" value="******"' in texts["junit"]
    assert "logging in with ******" in texts["log file"]
    assert "set_password" in texts["log file"]  # the VNC password's QMP command, masked
    assert "password: generated for this run" in texts["terminal"]


def test_reprs_and_messages_hide_passwords() -> None:
    pw = "Repr-Pw-5ecret-1"
    section = parse_cfg(f"[vm0]\nlogin = user=root,password={pw};\n", "t.cfg").section("vm0")
    params = params_for_section(section, "t.cfg")
    spec, _ = params.build()
    assert spec.login.password == pw
    assert pw not in repr(spec) and pw not in repr(spec.login)
    assert pw not in repr(params._entries)  # the raw entries as written
    marker_pw = "Marker-Pw-5ecret-2"
    request = parse_marker((), {"login": {"password": marker_pw}})
    assert marker_pw not in repr(request) and marker_pw not in request.describe()
    params.add("login", {"password": "Call-Pw-5ecret-3"}, call_origin("login", "vm0"))
    assert "Call-Pw-5ecret-3" not in repr(params._entries)
    assert "Call-Pw-5ecret-3" not in str(VmError("cannot log in with Call-Pw-5ecret-3"))
    err = ConfigError(f"bad value {marker_pw!r}")
    assert marker_pw not in str(err) and marker_pw not in err.message
    (dut,) = parse_dut_configs("[dut0]\nhost = 10.0.0.9\npassword = Dut-Pw-5ecret-4\n",
                               "d.cfg")
    assert "Dut-Pw-5ecret-4" not in repr(dut)
    access = Access("vm0", password="Acc-Pw-5ecret-5", vnc_password="Vnc5ecrt")
    assert "Acc-Pw-5ecret-5" not in repr(access) and "Vnc5ecrt" not in repr(access)
    generated = secret.generate()
    assert secret.mask(f"x {generated} y") == f"x {secret.MASK} y"
    # a short secret is masked as a word, not inside other words
    secret.register("Qz7_k")
    assert secret.mask("aQz7_k Qz7_k_1 Qz7_k=1") == f"aQz7_k Qz7_k_1 {secret.MASK}=1"
    secret.register("q7z")  # too short to be masked without garbling every output
    assert secret.mask("q7z") == "q7z"
