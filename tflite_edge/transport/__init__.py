"""Moving bytes: the MQTT broker, clients and the activation wire format."""
