"""Cluster mode: replicas share the work and keep their state in Kafka (docs/architecture.md)."""
