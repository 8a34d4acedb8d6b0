"""Which work partition owns what: a credential hashes onto one of ``work_partitions``; a
stream belongs to the credential that polls it (its container's, see ``assign_credential``).

Pure and stable across processes and releases: CRC-32 of the name, never Python's ``hash()``
(salted per process).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping

from notifier.config import Config


def assign_credential(container_id: str, credentials: tuple[str, ...]) -> str:
    """Spread containers over a subscription's credentials, stably (same container, same one)."""
    if len(credentials) == 1:
        return credentials[0]
    return credentials[zlib.crc32(container_id.encode()) % len(credentials)]


def partition_of(credential: str, partitions: int) -> int:
    """The work partition of ``credential``."""
    return zlib.crc32(credential.encode()) % partitions


class WorkMap:
    """The partition of every credential and stream of a configuration."""

    def __init__(self, partitions: int, credentials: Iterable[str],
                 subscriptions: Mapping[str, tuple[str, ...]]) -> None:
        """``subscriptions``: each subscription's credential names (in the config's order)."""
        self.partitions = partitions
        self.credentials = tuple(credentials)
        self._subs = dict(subscriptions)

    def of_credential(self, credential: str) -> int:
        return partition_of(credential, self.partitions)

    def credential_of(self, subscription: str, container_id: str) -> str | None:
        """The credential that polls the stream, None for a subscription not configured."""
        creds = self._subs.get(subscription)
        return None if not creds else assign_credential(container_id, creds)

    def of_stream(self, subscription: str, container_id: str) -> int | None:
        cred = self.credential_of(subscription, container_id)
        return None if cred is None else self.of_credential(cred)

    def credentials_in(self, partition: int) -> list[str]:
        return [c for c in self.credentials if self.of_credential(c) == partition]


def work_map(config: Config) -> WorkMap:
    """The work map of a cluster-mode configuration."""
    assert config.cluster is not None
    return WorkMap(config.cluster.work_partitions, [c.name for c in config.credentials],
                   {s.name: tuple(s.credential_names) for s in config.subscriptions})
