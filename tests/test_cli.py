"""The dtsvirt command line: cmdline, lint, check (exit codes and output lines)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.corpus import OWN, corpus_dir, corpus_files, needs_corpus

from pytest_dtsvirt.cli import EXIT_FAIL, EXIT_NOT_CHECKABLE, EXIT_OK, main


def test_lint_own_configs_passes_with_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(p) for p in sorted(OWN.glob("*.cfg"))]
    assert len(files) >= 3
    assert main(["lint", *files]) == EXIT_OK
    out = capsys.readouterr().out
    assert "legacy_idioms.cfg:5: warning: [vm0] cpu: cpupin written with commas" in out
    assert "virt_global.cfg:13: warning: [KVM] control: 'control' has no effect here" in out


@needs_corpus
def test_lint_whole_corpus_passes_with_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    corpus_dir()
    files = [str(p) for p in corpus_files()]
    assert len(files) >= 40
    assert main(["lint", *files]) == EXIT_OK
    out = capsys.readouterr().out
    assert "vf_etag.cfg:87: warning: [vm0] cpu: cpupin written with commas" in out


def test_lint_of_a_file_that_is_not_utf8_names_the_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "latin1.cfg"
    bad.write_bytes(b"\xef\xbb\xbf[vm0]\nmem =\n    size=\xff;\n")  # a BOM, then latin-1
    assert main(["lint", str(bad)]) == EXIT_FAIL
    out = capsys.readouterr()
    assert f"{bad}:3: not UTF-8 text" in out.out + out.err
    assert "Traceback" not in out.out + out.err


def test_lint_reports_one_line_per_problem(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.cfg"
    bad.write_text("[vm0]\ncpu = number=two;\nmonitor = port=;\ncpus = x=1;\n"
                   "[suite]\nanything = [1, 2]\n")
    assert main(["lint", str(bad)]) == EXIT_FAIL
    lines = capsys.readouterr().out.splitlines()
    assert f"{bad}:2: [vm0] cpu: number: 'two' is not an integer 1-512" in lines
    assert any(x.startswith(f"{bad}:4: [vm0] cpus: unknown parameter 'cpus'; valid: name,")
               for x in lines)
    assert any(x.startswith(f"{bad}:3: warning: [vm0] monitor:") for x in lines)
    assert main(["lint", str(tmp_path / "missing.cfg")]) == EXIT_FAIL


def test_cmdline_json_and_shell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "s.cfg"
    cfg.write_text("[vm0]\ndisk =\n    file=/img/a b.qcow2;\ncpu =\n    model=host,number=2;\n")
    assert main(["cmdline", str(cfg), "vm0", "--json", "--accel", "tcg",
                 "--hostfwd-port", "2200", "--run-dir", "/r"]) == EXIT_OK
    cap = capsys.readouterr()
    argv = json.loads(cap.out)
    assert "file=/img/a b.qcow2,snapshot=on" in argv and argv[argv.index("-cpu") + 1] == "max"
    assert "user,id=netdev0,restrict=on,hostfwd=tcp:127.0.0.1:2200-:22" in argv
    assert "cpu model=host is impossible under TCG" in cap.err
    assert main(["cmdline", str(cfg), "vm0", "--accel", "tcg", "--run-dir", "/r"]) == EXIT_OK
    assert "'file=/img/a b.qcow2,snapshot=on'" in capsys.readouterr().out


def test_user_mistakes_give_no_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "s.cfg"
    cfg.write_text("[vm0]\nmem = size=lots;\n")
    r = subprocess.run([sys.executable, "-m", "pytest_dtsvirt.cli", "cmdline", str(cfg), "vm1"],
                       capture_output=True, text=True)
    assert r.returncode == EXIT_FAIL and "Traceback" not in r.stderr
    assert "no section [vm1]; VM sections: vm0" in r.stderr
    r = subprocess.run([sys.executable, "-m", "pytest_dtsvirt.cli", "check", str(cfg), "vm0"],
                       capture_output=True, text=True)
    assert r.returncode == EXIT_FAIL and "Traceback" not in r.stderr
    assert f"{cfg}:2: [vm0] mem: size: 'lots' is not an integer 16-4194304" in r.stderr
    r = subprocess.run([sys.executable, "-m", "pytest_dtsvirt.cli", "cmdline", str(cfg), "vm0",
                        "--accel", "kvm"], capture_output=True, text=True)
    assert r.returncode == EXIT_FAIL and "Traceback" not in r.stderr


def test_check_through_the_cli(tmp_path: Path) -> None:
    img = tmp_path / "a.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "32M"], check=True)
    cfg = tmp_path / "s.cfg"
    cfg.write_text(f"[vm0]\ndisk =\n    file={img},opt_format=qcow2;\ncpu =\n    model=host;\n"
                   "[vm1]\ndevice =\n    driver=vhost-user,opt_path=/tmp/none.sock;\n"
                   f"disk =\n    file={img};\n"
                   f"[vm2]\ndisk =\n    file={img};\nusercmd =\n    cmd=-device nonesuch;\n")
    cli = [sys.executable, "-m", "pytest_dtsvirt.cli", "check", str(cfg)]
    r = subprocess.run([*cli, "vm0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == EXIT_OK, r.stdout + r.stderr
    assert "qemu accepts the command line (status prelaunch" in r.stdout
    r = subprocess.run([*cli, "vm1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == EXIT_NOT_CHECKABLE
    assert "not checkable: vhost-user device /tmp/none.sock" in r.stdout
    r = subprocess.run([*cli, "vm2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == EXIT_FAIL and "nonesuch" in r.stdout
