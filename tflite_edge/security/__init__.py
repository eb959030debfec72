"""Security: Ed25519 signing of bundles and policies, TLS settings, broker access control.

``signing`` signs and verifies bundles, policy directories and network messages;
``tls`` builds the TLS context every MQTT client uses; ``acl`` writes a Mosquitto
configuration with a password file and per-device ACLs. docs/security.md explains the
threat model and the deployment steps.

Nothing is re-exported here on purpose: every MQTT client imports ``tls``, and it should
not pay for importing ``cryptography`` (which ``signing`` needs) on a device that never
verifies anything.
"""
