"""A fresh guest per test: cold boot against restore from a snapshot, side by side.

(1) Single VM, N rounds alternating: the time from asking ``VmFactory`` for a fresh VM to
    a usable guest DUT (one command run over SSH), cold (``fresh=boot``) and restored
    (``fresh=restore``, after one VM of the shape saved the snapshot); medians and the
    ratio restore/cold (goal <= 0.15).
(2) Suite: the wall time of an inner pytest of M function-scoped tests (each uses
    ``vm_dut``), ``--dtsvirt-fresh boot`` and ``--dtsvirt-fresh restore``; the ratio
    (goal <= 0.25).
(3) The example suite (``examples/vxlan_sample``: VMs with two vhost-user devices, the
    backend restarted per test) both ways: wall times, how many VMs were restored, ratio.

    python benchmarks/fresh_guest.py -n 5 -m 20          # --no-example skips (3)
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid

from pytest_dtsvirt.session.dut import connect
from pytest_dtsvirt.session.dutconfig import local_dut_config
from pytest_dtsvirt.vmfactory import Settings, VmFactory

CFG = """\
[vm0]
mem =
    size=512;
start =
    wait_seconds=180;
"""


def settings(conf: str, fresh: str) -> Settings:
    return Settings(conf_dir=conf, duts_file=None, accel="tcg", boot_timeout=None,
                    keep_vm="never", hypervisor="kvm", cache_dir=None,
                    run_id=uuid.uuid4().hex[:12], worker=None, conf_dir_given=True,
                    fresh=fresh)


def one(factory: VmFactory) -> tuple[float, bool]:
    """Seconds from asking for a fresh VM to one command's output over SSH; restored?"""
    child = factory.child(default_suite="bench")
    began = time.monotonic()
    try:
        vm = child.start("vm0")
        out = child.guest(vm).send_expect("echo usable", "# ", 30)
        took = time.monotonic() - began
        assert "usable" in out
        return took, bool(getattr(vm, "restored", False))
    finally:
        child.close()


def single(conf: str, rounds: int) -> tuple[float, float]:
    dut = connect(local_dut_config())
    cold_f = VmFactory.for_dut(dut, settings(conf, "boot"))
    warm_f = VmFactory.for_dut(dut, settings(conf, "restore"))
    cold: list[float] = []
    warm: list[float] = []
    try:
        first, restored = one(warm_f)  # boots cold and saves the snapshot
        print(f"  first VM of the shape (boot + save): {first:.2f} s")
        for i in range(rounds):
            c, _ = one(cold_f)
            w, restored = one(warm_f)
            assert restored, "the restore fell back to a cold boot; see the log"
            cold.append(c)
            warm.append(w)
            print(f"  round {i + 1}: cold {c:.2f} s, restore {w:.2f} s")
    finally:
        warm_f.close()
        cold_f.close()
        dut.close()
    return statistics.median(cold), statistics.median(warm)


SUITE = """
import pytest

@pytest.mark.parametrize("i", range({m}))
def test_fresh(vm_dut, i):
    assert "ok" in vm_dut.send_expect("echo ok", "# ", 30)
"""


def suite(conf: str, tests: int, fresh: str) -> float:
    with tempfile.TemporaryDirectory(prefix="dtk-bench-") as tmp:
        path = os.path.join(tmp, "test_bench.py")
        with open(path, "w") as f:
            f.write(textwrap.dedent(SUITE.format(m=tests)))
        began = time.monotonic()
        res = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path,
             "--dtsvirt-accel", "tcg", f"--dtsvirt-conf-dir={conf}", "--dtsvirt-fresh", fresh,
             "-o", "log_cli=false"], capture_output=True, text=True, cwd=tmp, check=False)
        took = time.monotonic() - began
        if res.returncode != 0:
            raise SystemExit(f"inner suite ({fresh}) failed:\n{res.stdout[-3000:]}")
        return took


EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "examples", "vxlan_sample")


def example(fresh: str) -> tuple[float, str, int]:
    """Wall time of the example suite with ``--dtsvirt-fresh fresh``, pytest's summary
    line, and how many of its VMs were restored (from the live log)."""
    began = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--dtsvirt-accel",
         "tcg", "--dtsvirt-fresh", fresh, "-o", "log_cli=true", "-o", "log_cli_level=INFO"],
        capture_output=True, text=True, cwd=EXAMPLE, check=False)
    took = time.monotonic() - began
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    if res.returncode != 0:
        raise SystemExit(f"example suite ({fresh}) failed:\n{res.stdout[-3000:]}")
    restored = sum(1 for line in lines if " of suite " in line and " restored from " in line)
    return took, lines[-1].strip("= ") if lines else "?", restored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="rounds of the single-VM benchmark")
    parser.add_argument("-m", type=int, default=20, help="tests in the inner suite (0: skip)")
    parser.add_argument("--no-example", action="store_true",
                        help="skip the example suite (examples/vxlan_sample) both ways")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="dtk-bench-") as conf:
        with open(os.path.join(conf, "bench.cfg"), "w") as f:
            f.write(CFG)
        print(f"single VM, {args.n} rounds each (fresh VM -> one command over SSH):")
        cold, warm = single(conf, args.n)
        print(f"median cold {cold:.2f} s, restore {warm:.2f} s, "
              f"restore/cold = {warm / cold:.3f} (goal <= 0.15)")
        if args.m:
            print(f"suite of {args.m} function-scoped tests:")
            boot = suite(conf, args.m, "boot")
            print(f"  --dtsvirt-fresh boot:    {boot:.1f} s")
            restore = suite(conf, args.m, "restore")
            print(f"  --dtsvirt-fresh restore: {restore:.1f} s")
            print(f"suite restore/boot = {restore / boot:.3f} (goal <= 0.25)")
        if not args.no_example:
            print("example suite examples/vxlan_sample (vhost-user devices):")
            ex_boot, said, _ = example("boot")
            print(f"  --dtsvirt-fresh boot:    {ex_boot:.1f} s ({said})")
            ex_restore, said, restored = example("restore")
            print(f"  --dtsvirt-fresh restore: {ex_restore:.1f} s ({said}; "
                  f"{restored} VM(s) restored)")
            print(f"example restore/boot = {ex_restore / ex_boot:.3f}")


if __name__ == "__main__":
    main()
