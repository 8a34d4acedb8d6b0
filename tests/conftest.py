"""Suite-wide fixtures: the Kafka broker, started once per session (or KAFKA_BOOTSTRAP)."""

pytest_plugins = ["tests.integration.kafka_support"]
