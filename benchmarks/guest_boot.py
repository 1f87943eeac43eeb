"""Boot timings of the test guest under TCG, per boot profile.

Usage: python benchmarks/guest_boot.py [-n N] [--profiles fast plain]

For each profile, boots the guest N times with a plain qemu argv (tests/support/guest.py)
and prints the median seconds from qemu start to: the first init line on the serial console
(the raw floor), the agent answering guest-ping, host_connect having its address, an SSH
login running a command; and from guest-shutdown to qemu's exit. The readiness steps run in
the order the plugin's readiness ladder uses (ping -> address -> SSH).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from support.guest import booted, qga, run, ssh, wait_host_connect

from pytest_dtsvirt.guest import DEFAULT_SSH, SSH_SERVERS, ensure_guest_image

MARKER = "dtsvirt-guest: init start"
STEPS = ("init line", "agent ping", "host_connect addr", "ssh login", "shutdown->exit")


def one_boot(image: object, profile: str) -> dict[str, float]:
    """Boot once; the times of each step."""
    times: dict[str, float] = {}
    with booted(image, profile) as vm:  # type: ignore[arg-type]
        stop = threading.Event()

        def watch_console() -> None:
            while not stop.is_set():
                if MARKER in vm.console():
                    times["init line"] = time.monotonic() - vm.t0
                    return
                time.sleep(0.01)

        watcher = threading.Thread(target=watch_console, daemon=True)
        watcher.start()
        qga(vm.qga_path, "guest-ping", timeout=120)
        times["agent ping"] = time.monotonic() - vm.t0
        wait_host_connect(vm, timeout=120)
        times["host_connect addr"] = time.monotonic() - vm.t0
        client = ssh(vm, timeout=120)
        rc, _ = run(client, "uname -a")
        assert rc == 0
        times["ssh login"] = time.monotonic() - vm.t0
        client.close()
        watcher.join(5)
        stop.set()
        start = time.monotonic()
        qga(vm.qga_path, "guest-shutdown")
        vm.proc.wait(30)
        times["shutdown->exit"] = time.monotonic() - start
    return times


def main() -> int:
    """Run the benchmark and print a table of medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3, help="boots per profile (default 3)")
    parser.add_argument("--profiles", nargs="+", default=["fast", "plain"])
    parser.add_argument("--ssh", choices=SSH_SERVERS, default=DEFAULT_SSH,
                        help="SSH server of the guest (default: dropbear, the default guest)")
    args = parser.parse_args()
    t = time.monotonic()
    image = ensure_guest_image(ssh=args.ssh, progress=lambda m: print(m, file=sys.stderr))
    print(f"image {image.key} ready in {time.monotonic() - t:.2f} s", file=sys.stderr)
    print(f"{'profile':8} " + " ".join(f"{s:>17}" for s in STEPS))
    for profile in args.profiles:
        runs = [one_boot(image, profile) for _ in range(args.n)]
        for i, r in enumerate(runs):
            print(f"  run {i}: " + " ".join(f"{s}={r.get(s, float('nan')):.2f}" for s in STEPS),
                  file=sys.stderr)
        med = {s: statistics.median(r[s] for r in runs if s in r) for s in STEPS}
        print(f"{profile:8} " + " ".join(f"{med[s]:17.2f}" for s in STEPS), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
