"""PVP loopback: host testpmd (vhost-user, ``io``) <-> guest testpmd (virtio PMD, ``mac``).

The guest's ``start tx_first`` sends a burst that then circulates: guest virtio port ->
vhost-user -> host testpmd (io: back out of the same port) -> guest testpmd (mac: source
MAC rewritten, back out). The test runs the loop for SECONDS seconds, asserts that both
applications forwarded packets in both directions, and prints the rate.
"""

from __future__ import annotations

import time

import pytest

from pytest_dtsvirt import GuestTestpmd, PortStats, TestpmdBackend

pytestmark = pytest.mark.slow

#: how long the loop runs (short: the whole CI must stay well under 30 minutes)
SECONDS = 5.0
#: the least packets each side must forward in SECONDS under TCG on a loaded 2-core machine
#: (measured here: 32 000 to 370 000 packets per second each way, by the load of other runs)
MIN_PACKETS = 1000


def _delta(before: PortStats, after: PortStats) -> tuple[int, int]:
    return after.rx_packets - before.rx_packets, after.tx_packets - before.tx_packets


def test_pvp_loopback(vhost_backend: TestpmdBackend, guest_testpmd: GuestTestpmd,
                      capsys: pytest.CaptureFixture[str]) -> None:
    host, guest = vhost_backend, guest_testpmd
    assert [(p.driver, p.link_up) for p in guest.summary] == [("net_virtio", True)]
    host.set_fwd("io")
    host.start()
    guest.set_fwd("mac")
    guest.start_tx_first()
    time.sleep(1.0)  # let the loop settle: the rate is measured over a full window
    before = host.port_stats(0), guest.port_stats(0)
    began = time.monotonic()
    time.sleep(SECONDS)
    after = host.port_stats(0), guest.port_stats(0)
    elapsed = time.monotonic() - began
    guest.stop()
    host.stop()

    (host_rx, host_tx), (guest_rx, guest_tx) = _delta(before[0], after[0]), _delta(
        before[1], after[1])
    for side, rx, tx in (("host", host_rx, host_tx), ("guest", guest_rx, guest_tx)):
        assert rx >= MIN_PACKETS and tx >= MIN_PACKETS, (side, rx, tx)
    # one loop: once both stopped, what one side sent the other received, but for what
    # still sits in a virtio ring (at most a ring of 256 descriptors and a burst)
    host_end, guest_end = host.port_stats(0), guest.port_stats(0)
    assert abs(host_end.tx_packets - guest_end.rx_packets) <= 512, (host_end, guest_end)
    assert abs(guest_end.tx_packets - host_end.rx_packets) <= 512, (host_end, guest_end)
    for end in (host_end, guest_end):
        assert end.rx_errors == end.tx_errors == 0, end
    with capsys.disabled():
        print(f"\nPVP loopback under {elapsed:.1f} s: host forwarded {host_tx / elapsed:,.0f} "
              f"pps, guest {guest_tx / elapsed:,.0f} pps")
