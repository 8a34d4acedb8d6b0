"""Suite-wide fixtures: the Kafka broker (started once per session unless KAFKA_BOOTSTRAP names one)."""

pytest_plugins = ["tests.integration.kafka_support"]
