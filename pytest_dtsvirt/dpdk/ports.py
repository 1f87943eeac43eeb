"""The guest's network ports as DTS sees them, and driver binding by sysfs (busybox sh only).

``ports_info`` of the legacy framework is one dict per NIC other than the control NIC
(``host_connect``, guest PCI ``00:1f.0``), in PCI order, with ``pci``, ``mac``, ``intf``
and ``driver``. Here it is read from sysfs by one constant shell script, and binding is done
the way ``dpdk-devbind.py`` does it without Python: ``driver_override``, ``unbind``,
``drivers_probe``. Every value reaches the guest's shell as a positional parameter.

The script texts and parsers are pure; :func:`scan` and :func:`bind` take a session.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_dtsvirt.config.model import CONTROL_ADDR
from pytest_dtsvirt.errors import SessionError
from pytest_dtsvirt.session.base import Session

#: drivers a DPDK application drives a PCI NIC through
DPDK_DRIVERS = ("uio_pci_generic", "vfio-pci", "igb_uio")
#: the kernel module that provides each bindable driver
_MODULES = {"uio_pci_generic": "uio_pci_generic", "vfio-pci": "vfio-pci",
            "igb_uio": "igb_uio"}
CONTROL_PCI = f"0000:00:{CONTROL_ADDR}.0"

# One line per PCI network device (class 0x02xxxx): its address, vendor:device, driver, and
# the kernel interface with its MAC (virtio-net's lives under virtioN/net/, others' under
# net/). Output fields are separated by spaces; empty fields print as "-".
SCAN_SCRIPT = r"""
for d in /sys/bus/pci/devices/*; do
    case "$(cat "$d/class")" in 0x02*) ;; *) continue ;; esac
    drv=-; [ -e "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")")
    intf=-; mac=-
    for n in "$d"/net/* "$d"/virtio*/net/*; do
        [ -e "$n/address" ] || continue
        intf=${n##*/}; mac=$(cat "$n/address")
    done
    echo "port ${d##*/} $(cat "$d/vendor"):$(cat "$d/device") $drv $intf $mac"
done
exit 0
"""

# Binds "$2".. to driver "$1" (after loading module "$MOD"): override, unbind, probe, clear
# the override, and print where each device ended up. Status 0 even when a device did not
# bind: the caller compares and explains.
BIND_SCRIPT = r"""
drv=$1; mod=$2; shift 2
[ -n "$mod" ] && { modprobe "$mod" 2>&1 || echo "modprobe-failed $mod"; }
for pci in "$@"; do
    d=/sys/bus/pci/devices/$pci
    echo "$drv" > "$d/driver_override"
    [ -e "$d/driver" ] && echo "$pci" > "$d/driver/unbind"
    echo "$pci" > /sys/bus/pci/drivers_probe 2>/dev/null
    echo > "$d/driver_override"
    now=-; [ -e "$d/driver" ] && now=$(basename "$(readlink "$d/driver")")
    echo "bound $pci $now"
done
exit 0
"""


def parse_scan(text: str) -> list[dict[str, Any]]:
    """``ports_info`` entries from :data:`SCAN_SCRIPT`'s output (pure), PCI order, the
    control NIC left out."""
    ports: list[dict[str, Any]] = []
    for line in text.replace("\r", "").splitlines():
        words = line.split()
        if len(words) != 6 or words[0] != "port":
            continue
        _, pci, pci_id, driver, intf, mac = words
        if pci == CONTROL_PCI or intf == "host_connect":
            continue
        ports.append({"pci": pci, "type": pci_id.replace("0x", ""),
                      "driver": "" if driver == "-" else driver,
                      "intf": "" if intf == "-" else intf,
                      "mac": "" if mac == "-" else mac.lower()})
    return sorted(ports, key=lambda p: str(p["pci"]))


def parse_bind(text: str) -> tuple[dict[str, str], list[str]]:
    """``{pci: driver now}`` and the modules that failed to load, from :data:`BIND_SCRIPT`."""
    bound: dict[str, str] = {}
    failed: list[str] = []
    for line in text.replace("\r", "").splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "bound":
            bound[words[1]] = "" if words[2] == "-" else words[2]
        elif len(words) == 2 and words[0] == "modprobe-failed":
            failed.append(words[1])
    return bound, failed


def scan(session: Session) -> list[dict[str, Any]]:
    """The guest's ports, read now from sysfs."""
    result = session.run(["sh", "-c", SCAN_SCRIPT], timeout=30, check=True)
    return parse_scan(result.stdout)


def bind(session: Session, vm_name: str, driver: str, pcis: Sequence[str]) -> dict[str, str]:
    """Bind ``pcis`` to ``driver``; SessionError naming the VM and the fix when a device did
    not end up on it. Returns ``{pci: driver}``."""
    module = _MODULES.get(driver, "")
    result = session.run(["sh", "-c", BIND_SCRIPT, "sh", driver, module, *pcis],
                         timeout=60, check=True)
    bound, failed = parse_bind(result.stdout)
    wrong = {pci: bound.get(pci, "?") for pci in pcis if bound.get(pci) != driver}
    if wrong:
        hint = ""
        if driver == "vfio-pci":
            hint = (" (vfio-pci needs an IOMMU in the guest, and Debian's kernel has no vfio "
                    "no-IOMMU mode: bind to uio_pci_generic instead)")
        elif failed:
            hint = (f" (module {', '.join(failed)} did not load: is the VM's guest parameter "
                    "dpdk=yes?)")
        detail = ", ".join(f"{pci} is on {now or 'no driver'}" for pci, now in wrong.items())
        dmesg = session.run(["sh", "-c", "dmesg | tail -n 5"], timeout=20).stdout
        raise SessionError(f"{vm_name}: bind_interfaces_linux({driver!r}): {detail}{hint}\n"
                           f"{result.stdout}{dmesg}")
    return bound
