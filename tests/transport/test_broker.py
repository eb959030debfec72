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
