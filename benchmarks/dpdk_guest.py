"""Cold boot of the DPDK test guest to a testpmd that shows its ports, against the base guest.

Usage: python benchmarks/dpdk_guest.py [-n N]

Boots each guest N times with a plain qemu argv (tests/support/guest.py) under TCG and prints
the median seconds from qemu start to: an SSH login running a command (both guests), the two
virtio-net ports bound to uio_pci_generic by sysfs, and dpdk-testpmd having printed both ports
with their link up (``show port info all``; DPDK guest only). The DPDK guest boots as the
``guest dpdk=yes`` VM option makes it: ``-cpu max``, 2 vCPUs, 1024 MB, ``hugepages=256``.
Also prints both initrd sizes. Restoring a booted guest from a snapshot does not exist yet,
so there is no "restored" column.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from support.guest import booted, run, ssh

from pytest_dtsvirt.guest import GuestImage, ensure_guest_image

PCI = ("0000:00:04.0", "0000:00:05.0")
STEPS = ("ssh login", "ports bound", "testpmd ports up")
BIND = ("for d in {pci}; do echo uio_pci_generic > /sys/bus/pci/devices/$d/driver_override; "
        "echo $d > /sys/bus/pci/devices/$d/driver/unbind; "
        "echo $d > /sys/bus/pci/drivers_probe; done")
TESTPMD = ("(echo 'show port info all'; echo quit) | "
           "timeout 150 dpdk-testpmd -l 0-1 -n 1 -- -i")


def ports() -> list[str]:
    """Two virtio-net-pci ports at 00:04.0 and 00:05.0 (user backends, no outside network)."""
    argv: list[str] = []
    for i, pci in enumerate(PCI):
        argv += ["-netdev", f"user,id=d{i},restrict=on",
                 "-device", f"virtio-net-pci,netdev=d{i},addr={pci[-4:-2]}"]
    return argv


def one_boot(image: GuestImage, dpdk: bool) -> dict[str, float]:
    """Boot once; the times of each step reached."""
    times: dict[str, float] = {}
    boot = dict(cpu="max", smp=2, mem=1024, append="hugepages=256") if dpdk else {}
    with booted(image, "fast", extra=ports(), **boot) as vm:
        client = ssh(vm, timeout=180)
        rc, out = run(client, "uname -a")
        assert rc == 0, out
        times["ssh login"] = time.monotonic() - vm.t0
        if dpdk:
            rc, out = run(client, BIND.format(pci=" ".join(PCI)))
            assert rc == 0, out
            times["ports bound"] = time.monotonic() - vm.t0
            rc, out = run(client, TESTPMD, timeout=200)
            assert rc == 0 and out.count("Link status: up") == 2, out
            times["testpmd ports up"] = time.monotonic() - vm.t0
    return times


def main() -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3, help="boots per guest (default 3)")
    args = parser.parse_args()
    # SSH attempts before the guest's server is up fail by design; paramiko logs each one
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    images = {}
    for name, dpdk in (("base", False), ("dpdk", True)):
        t = time.monotonic()
        images[name] = ensure_guest_image(dpdk=dpdk, progress=lambda m: print(m, file=sys.stderr))
        print(f"{name} image {images[name].key} ready in {time.monotonic() - t:.2f} s",
              file=sys.stderr)
    print(f"{'guest':6} {'initrd MB':>10} " + " ".join(f"{s:>17}" for s in STEPS))
    for name, image in images.items():
        runs = [one_boot(image, name == "dpdk") for _ in range(args.n)]
        for i, r in enumerate(runs):
            print(f"  {name} run {i}: " + " ".join(f"{s}={r[s]:.2f}" for s in STEPS if s in r),
                  file=sys.stderr)
        cells = []
        for step in STEPS:
            vals = [r[step] for r in runs if step in r]
            cells.append(f"{statistics.median(vals):17.2f}" if vals else f"{'-':>17}")
        size = os.path.getsize(image.initrd) / 1e6
        print(f"{name:6} {size:10.1f} " + " ".join(cells))
    print(f"seconds from qemu start (median of {args.n} cold boots, TCG); restored from a "
          "snapshot: not measured, snapshot restore does not exist yet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
