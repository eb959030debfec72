"""``MqttLink``: the ``MessageLink`` over a real MQTT 5 broker, with paho-mqtt.

The network loop runs in paho's thread and reconnects on its own (see ``make_client``);
subscriptions are made again on every connection, because clients keep no session on the
broker. The link counts as ``connected`` once the broker confirmed every subscription.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from ..errors import BrokerConnectionError
from .link import Message, MessageHandler
from .mqtt import BrokerAddress, Will, connect_and_start, make_client, write_in_caller
from .properties import PackedProperties
from .protocol import user_properties

__all__ = ["MqttLink"]

log = logging.getLogger(__name__)

MAX_ROUTES = 1024  # topics whose matching handlers are remembered


class MqttLink:
    """A paho-mqtt client behind the ``MessageLink`` interface. Not connected until ``connect``."""

    def __init__(self, broker: str | BrokerAddress, client_id: str, *, will: Will | None = None) -> None:
        self.client_id = client_id
        self._client = make_client(broker, client_id, will=will)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        # Requests leave from the thread that publishes them, without a wake-up of paho's
        # network thread on the way (this link sets no on_publish callback, which paho would
        # call from there).
        write_in_caller(self._client)
        self._lock = threading.Lock()
        self._subscriptions: dict[str, tuple[int, bool, MessageHandler]] = {}  # filter -> qos, optional, handler
        self._routes: dict[str, list[MessageHandler]] = {}  # topic -> handlers of matching filters
        self._awaiting: dict[int, str] = {}  # SUBSCRIBE message id -> topic filter
        self._refused: set[str] = set()
        self._ready = threading.Event()
        self._started = False
        self._connections = 0

    # -- MessageLink ---------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._client.is_connected() and self._ready.is_set()

    @property
    def connections(self) -> int:
        return self._connections

    def subscribe(self, topic_filter: str, handler: MessageHandler, *, qos: int = 0, optional: bool = False) -> None:
        with self._lock:
            self._subscriptions[topic_filter] = (qos, optional, handler)
            self._routes.clear()
            self._ready.clear()
        if self._client.is_connected():
            self._subscribe(self._client, topic_filter, qos)

    def connect(self, timeout_s: float, *, required: bool = True) -> bool:
        deadline = time.monotonic() + timeout_s
        if not self._started:
            self._started = True
            if required:
                connect_and_start(self._client, timeout_s)
            else:
                # Start anyway: the loop connects (and subscribes) whenever the broker is up.
                self._client.loop_start()
        if self._ready.wait(max(deadline - time.monotonic(), 0.0)):
            return True
        if required:
            self.close()
            required_filters = [f for f, (_, optional, _) in self._subscriptions.items() if not optional]
            raise BrokerConnectionError(
                f"the broker did not confirm the subscription to {', '.join(required_filters)}"
            )
        return False

    def publish(self, message: Message, *, qos: int = 0, timeout_s: float | None = None) -> bool:
        if not self.connected:
            raise BrokerConnectionError("not connected to the MQTT broker (reconnecting in the background)")
        properties = PackedProperties(
            response_topic=message.response_topic,
            correlation=message.correlation,
            expiry_s=message.expiry_s,
            user=tuple(message.user_properties.items()),
        )
        info = self._client.publish(message.topic, message.payload, qos=qos, properties=properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise BrokerConnectionError(f"publishing to {message.topic} failed: {paho.error_string(info.rc)}")
        return True

    def close(self) -> None:
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()

    # -- paho callbacks (network thread) -------------------------------------------------
    def _subscribe(self, client: paho.Client, topic_filter: str, qos: int) -> None:
        result, mid = client.subscribe(topic_filter, qos=qos)
        if result == paho.MQTT_ERR_SUCCESS and mid is not None:
            with self._lock:
                self._awaiting[mid] = topic_filter

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        with self._lock:
            self._connections += 1
            subscriptions = list(self._subscriptions.items())
            self._awaiting.clear()
            self._refused.clear()
        if not subscriptions:
            self._ready.set()
        for topic_filter, (qos, _, _) in subscriptions:
            self._subscribe(client, topic_filter, qos)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, codes: list[ReasonCode], props: Any) -> None:
        with self._lock:
            topic_filter = self._awaiting.pop(mid, None)
            if topic_filter is None:
                return
            refused = not codes or codes[0].is_failure
            if refused:
                self._refused.add(topic_filter)
            required_refused = any(not self._subscriptions[f][1] for f in self._refused if f in self._subscriptions)
            if not self._awaiting and not required_refused:
                self._ready.set()
        if refused:
            log.warning("subscription to %s refused: %s", topic_filter, codes)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self._ready.clear()
        if reason.is_failure:
            log.info("disconnected from the broker (%s); reconnecting in the background", reason)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        props = message.properties
        correlation = getattr(props, "CorrelationData", None)
        received = Message(
            topic=message.topic,
            payload=message.payload,
            correlation=bytes(correlation) if correlation is not None else None,
            response_topic=getattr(props, "ResponseTopic", None),
            user_properties=user_properties(props),
        )
        topic = message.topic
        with self._lock:
            handlers = self._routes.get(topic)
            if handlers is None:
                # Matched once per topic (paho's matcher is slow Python), then looked up.
                handlers = [h for f, (_, _, h) in self._subscriptions.items() if paho.topic_matches_sub(f, topic)]
                if len(self._routes) >= MAX_ROUTES:
                    self._routes.clear()
                self._routes[topic] = handlers
        for handler in handlers:
            handler(received)
