"""Boot timings of the test guest under TCG, per boot profile.

Usage: python benchmarks/guest_boot.py [-n N] [--profiles fast plain] [--vhost]
       [--keys KEY ...]

For each profile, boots the guest N times with a plain qemu argv (tests/support/guest.py)
and prints the median seconds from qemu start to: the first init line on the serial console
(the raw floor), the agent answering guest-ping, host_connect having its address, an SSH
login running a command; and from guest-shutdown to qemu's exit. The readiness steps run in
the order the plugin's readiness ladder uses (ping -> address -> SSH).

``--vhost`` gives the guest what the vxlan example's VM has besides the fast profile: a
shared memfd memory backend and two vhost-user virtio-net NICs (``vectors=0``) served by a
``dpdk-testpmd`` started for each boot (not timed). ``--keys`` boots cached builds of the
guest (directories of the image cache) side by side, interleaved, instead of the current one:
e.g. a build before and after a change of the guest's ``/init``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import threading
import time
from collections.abc import Iterator

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from support.guest import booted, qga, run, ssh, wait_host_connect

from pytest_dtsvirt.guest import (
    DEFAULT_SSH,
    SSH_SERVERS,
    GuestImage,
    _from_manifest,
    default_cache_dir,
    ensure_guest_image,
)

MARKER = "dtsvirt-guest: init start"
STEPS = ("init line", "agent ping", "host_connect addr", "ssh login", "shutdown->exit")


def vhost_extra(paths: list[str]) -> list[str]:
    """The example VM's extras: memfd memory shared with the backend, vhost-user NICs."""
    extra = ["-object", "memory-backend-memfd,id=mem0,size=512M,share=on",
             "-numa", "node,memdev=mem0"]
    for i, path in enumerate(paths, 1):
        extra += ["-chardev", f"socket,id=char{i},path={path}",
                  "-netdev", f"type=vhost-user,id=vh{i},chardev=char{i},vhostforce=on",
                  "-device", f"virtio-net-pci,netdev=vh{i},mac=00:00:20:00:00:2{i},vectors=0"]
    return extra


@contextlib.contextmanager
def backend(vhost: bool) -> Iterator[list[str]]:
    """A dpdk-testpmd with two vhost-user sockets when ``vhost``; the argv extras."""
    if not vhost:
        yield []
        return
    from pytest_dtsvirt.dpdk.vhost import TestpmdBackend
    from pytest_dtsvirt.session.local import LocalSession

    with TestpmdBackend(LocalSession(), ports=2) as pmd:
        yield vhost_extra(list(pmd.socket_paths))


def one_boot(image: object, profile: str, vhost: bool = False) -> dict[str, float]:
    """Boot once; the times of each step."""
    times: dict[str, float] = {}
    with backend(vhost) as extra, booted(image, profile, extra=extra) as vm:  # type: ignore[arg-type]
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
    parser.add_argument("--vhost", action="store_true",
                        help="add the vxlan example's memfd memory and two vhost-user NICs "
                             "(a dpdk-testpmd backend per boot)")
    parser.add_argument("--keys", nargs="+", default=[],
                        help="boot these cached builds side by side (interleaved)")
    args = parser.parse_args()
    t = time.monotonic()
    if args.keys:
        images: list[GuestImage] = []
        for key in args.keys:
            found = _from_manifest(default_cache_dir(), key, False)
            if found is None:
                parser.error(f"no usable build {key} in {default_cache_dir()}")
            images.append(found)
    else:
        images = [ensure_guest_image(ssh=args.ssh,
                                     progress=lambda m: print(m, file=sys.stderr))]
    print(f"images {' '.join(i.key for i in images)} ready in {time.monotonic() - t:.2f} s",
          file=sys.stderr)
    label = "image/profile" if args.keys else "profile"
    print(f"{label:28} " + " ".join(f"{s:>17}" for s in STEPS))
    for profile in args.profiles:
        runs: dict[str, list[dict[str, float]]] = {i.key: [] for i in images}
        for n in range(args.n):
            for image in images:
                r = one_boot(image, profile, args.vhost)
                runs[image.key].append(r)
                print(f"  {image.key} run {n}: " + " ".join(
                    f"{s}={r.get(s, float('nan')):.2f}" for s in STEPS), file=sys.stderr)
        for image in images:
            med = {s: statistics.median(r[s] for r in runs[image.key] if s in r)
                   for s in STEPS}
            name = f"{image.key}/{profile}" if args.keys else profile
            print(f"{name:28} " + " ".join(f"{med[s]:17.2f}" for s in STEPS), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
