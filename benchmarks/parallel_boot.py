"""Two VMs booted one after the other vs. at once (``vm_factory.start_many``).

For N rounds, alternating so that machine load hits both alike: (a) ``start`` vm0 then vm1,
(b) ``start_many([vm0, vm1])``; each to usable guests, then both stopped. Prints the medians
and the ratio b/a (goal: well below 1 on two or more cores; a loaded 2-core machine gets
less).

    python benchmarks/parallel_boot.py -n 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from pytest_dtsvirt.runtime import rundir
from pytest_dtsvirt.session.dut import connect
from pytest_dtsvirt.session.dutconfig import local_dut_config
from pytest_dtsvirt.vmfactory import Settings, VmFactory

CFG = "".join(f"[vm{i}]\nlogin =\n    user=root,password=tester;\n" for i in (0, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=3, help="rounds")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as conf:
        Path(conf, "par.cfg").write_text(CFG)
        settings = Settings(conf_dir=conf, duts_file=None, accel="tcg", boot_timeout=300.0,
                            keep_vm="never", hypervisor="kvm", cache_dir=None,
                            run_id=rundir.current_run_id(), worker=None, conf_dir_given=True)
        dut = connect(local_dut_config())
        serial: list[float] = []
        parallel: list[float] = []
        try:
            for _ in range(args.n):
                factory = VmFactory.for_dut(dut, settings)
                began = time.monotonic()
                factory.start("vm0", "par")
                factory.start("vm1", "par")
                serial.append(time.monotonic() - began)
                factory.close()
                factory = VmFactory.for_dut(dut, settings)
                began = time.monotonic()
                factory.start_many(["vm0", "vm1"], suite="par")
                parallel.append(time.monotonic() - began)
                factory.close()
        finally:
            dut.close()
    a, b = statistics.median(serial), statistics.median(parallel)
    print(f"serial  {a:6.2f} s  {serial}")
    print(f"parallel {b:6.2f} s  {parallel}")
    print(f"ratio parallel/serial {b / a:.2f}")


if __name__ == "__main__":
    main()
