import math

import pytest

from tflite_edge.telemetry.link import LinkMonitor, LossCounter, RttTracker, ThroughputEstimator, read_wifi_signal


def test_throughput_is_the_harmonic_mean_of_transfer_rates():
    est = ThroughputEstimator(window=3)
    assert est.mbps is None
    # 1 MB in 1 s = 8 Mbit/s; 1 MB in 4 s = 2 Mbit/s -> harmonic mean 2 / (1/8 + 1/2) = 3.2
    est.add(1_000_000, 1.0)
    est.add(1_000_000, 4.0)
    assert est.mbps == pytest.approx(3.2)
    # the window drops the oldest rate: rates 2, 4, 4 Mbit/s -> 3 / (1/2 + 1/4 + 1/4) = 3.0
    est.add(500_000, 1.0)
    est.add(500_000, 1.0)
    assert est.mbps == pytest.approx(3.0)
    assert est.expected_time_s(1_000_000) == pytest.approx(8 / 3.0)


def test_one_fast_burst_does_not_inflate_the_estimate():
    est = ThroughputEstimator(window=10)
    for _ in range(9):
        est.add(125_000, 1.0)  # 1 Mbit/s
    est.add(125_000, 0.001)  # 1000 Mbit/s once
    assert est.mbps < 1.12  # an arithmetic mean would say ~100.9


def test_too_small_transfers_are_not_used():
    est = ThroughputEstimator(min_bytes=100)
    assert not est.add(10, 0.001)
    assert est.mbps is None
    with pytest.raises(ValueError):
        est.add(10, -1.0)


def test_rtt_smoothing_follows_rfc6298():
    rtt = RttTracker()
    rtt.add(100.0)
    assert (rtt.srtt_ms, rtt.rttvar_ms) == (100.0, 50.0)
    rtt.add(200.0)
    assert rtt.srtt_ms == pytest.approx(0.875 * 100 + 0.125 * 200)
    assert rtt.rttvar_ms == pytest.approx(0.75 * 50 + 0.25 * 100)
    assert (rtt.min_ms, rtt.max_ms, rtt.last_ms) == (100.0, 200.0, 200.0)
    with pytest.raises(ValueError):
        rtt.add(math.nan)


def test_loss_ratio_over_a_window():
    losses = LossCounter(window=4)
    for outcome in ("ok", "timeout", "ok", "error", "ok", "ok"):
        {"ok": losses.success, "timeout": losses.timeout, "error": losses.error}[outcome]()
    assert (losses.sent, losses.answered, losses.timeouts, losses.errors) == (6, 4, 1, 1)
    assert losses.loss_ratio == pytest.approx(1 / 4)  # the last four: ok error ok ok


WIRELESS = """Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE
 face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22
  eth9: 0000    0    0    0        0      0      0      0      0        0
 wlan0: 0000   54.  -56.  -256        0      0      0      0     12        0
"""


def test_wifi_signal_from_proc_net_wireless(tmp_path):
    path = tmp_path / "wireless"
    path.write_text(WIRELESS)
    signal = read_wifi_signal(path, "wlan0")
    assert signal is not None
    assert (signal.interface, signal.link_quality, signal.signal_dbm, signal.noise_dbm) == ("wlan0", 54.0, -56.0, None)
    # unsigned-byte dBm (some drivers): 196 means -60 dBm
    path.write_text(WIRELESS.replace("-56.", "196."))
    assert read_wifi_signal(path, "wlan0").signal_dbm == -60.0
    assert read_wifi_signal(tmp_path / "absent") is None
    assert read_wifi_signal(path, "wlan7") is None


def test_link_monitor_snapshot(tmp_path):
    path = tmp_path / "wireless"
    path.write_text(WIRELESS)
    link = LinkMonitor(wireless_path=path, wifi_interface="wlan0")
    link.record_transfer(25_000, 0.02)  # 10 Mbit/s
    link.record_rtt(30.0)
    link.record_success()
    link.record_timeout()
    snap = link.snapshot()
    assert snap.uplink_mbps == pytest.approx(10.0)
    assert snap.rtt_ms == 30.0 and snap.timeouts == 1 and snap.loss_ratio == 0.5
    assert snap.wifi is not None and snap.wifi.signal_dbm == -56.0
