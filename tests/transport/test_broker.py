import socket

import pytest

from tflite_edge.transport.broker import BrokerError, MosquittoBroker


def _accepts(broker: MosquittoBroker) -> bool:
    try:
        with socket.create_connection((broker.host, broker.port), timeout=0.5):
            return True
    except OSError:
        return False


def test_broker_starts_stops_and_restarts_on_the_same_port():
    with MosquittoBroker() as broker:
        assert _accepts(broker)
        port = broker.port
        broker.stop()
        assert not _accepts(broker)
        broker.start()
        assert broker.port == port and _accepts(broker)


def test_missing_binary_is_a_clear_error():
    broker = MosquittoBroker(binary="no-such-mosquitto")
    with pytest.raises(BrokerError, match="apt-get install mosquitto"):
        broker.start()
    broker.close()


def test_a_bad_configuration_is_reported_with_mosquittos_words():
    broker = MosquittoBroker(extra_config="no_such_option 1")
    with pytest.raises(BrokerError, match="no_such_option|Unknown configuration"):
        broker.start()
    broker.close()


def test_the_broker_log_is_kept_even_when_started_as_root():
    import time

    with MosquittoBroker() as broker:
        deadline = time.monotonic() + 5
        # The readiness probe's connection is logged (notice level).
        while "New connection" not in broker.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "New connection from 127.0.0.1" in broker.log_path.read_text()
