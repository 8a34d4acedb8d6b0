"""One container's syncStatus calls for the scheduler: ask, sort the answers, and find the
culprit when one bad token spoils a whole batch.

A batch rejected as a whole (400) or answered with a malformed result is split in halves,
down to the single token at fault, which is quarantined and recovers by a resync; the others
go on. Failures that concern every token of the container go to each stream's failure policy
(notifier.failures); the rest are logged and retried at the group's next check.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from notifier.errors import (
    BadRequestError,
    CredentialError,
    ProtocolError,
    UpstreamError,
)
from notifier.failures import FailurePolicy
from notifier.runtime import Group, StreamRuntime, match_status, reference_ids
from notifier.source.client import RelationshipClient

log = logging.getLogger("notifier.scheduler")  # the scheduler's lines, as operators know them

Outcome = tuple[list[StreamRuntime], list[StreamRuntime]]  # (changed, unchanged)


class StatusCalls:
    """syncStatus for one credential's scheduler; each call waits for its check slot."""

    def __init__(self, credential: str, client: RelationshipClient, failures: FailurePolicy,
                 pace: Callable[[], Awaitable[bool]]) -> None:
        self._credential = credential
        self._client = client
        self._failures = failures
        self._pace = pace  # False: stopped meanwhile
        self._refs: dict[int, list[str]] = {}  # reference_ids by chunk size, built once

    async def ask(self, group: Group, chunk: list[StreamRuntime]) -> Outcome | None:
        """(changed, unchanged) among ``chunk``; None when the whole call failed."""
        refs = self._refs.get(len(chunk))
        if refs is None:
            refs = self._refs[len(chunk)] = reference_ids(len(chunk))
        items = list(zip([s.token or "" for s in chunk], refs, strict=True))
        if not await self._pace():
            return None
        try:
            resp = await self._client.sync_status(group.container_id, items)
        except (BadRequestError, ProtocolError) as exc:
            # One bad token (or one malformed result) spoils the whole answer: split the batch
            # so the others go on, down to the culprit, which recovers by a resync.
            return await self._split(group, chunk, exc)
        except (UpstreamError, CredentialError) as exc:
            if exc.container_wide:
                for s in chunk:
                    await self._failures.on_failure(s, exc)
            elif exc.needs_operator:
                log.error("%s", exc, extra={"credential": self._credential})
            else:
                log.warning("syncStatus failed for container %s: %s", group.container_id, exc,
                            extra={"credential": self._credential,
                                   "container": group.container_id})
            return None
        answer = match_status(resp, len(chunk), refs)
        for idx, why in answer.rejected:
            await self._failures.on_failure(chunk[idx], BadRequestError(why, endpoint="syncStatus"))
        if answer.answered < len(chunk):
            log.warning("syncStatus answered %d of %d tokens; the rest are retried later",
                        answer.answered, len(chunk),
                        extra={"credential": self._credential, "container": group.container_id})
        if answer.ok == list(range(len(chunk))):  # the usual answer: nothing new anywhere
            return [], chunk
        return [chunk[i] for i in answer.due], [chunk[i] for i in answer.ok]

    async def _split(self, group: Group, chunk: list[StreamRuntime], exc: Exception
                     ) -> Outcome | None:
        """A syncStatus batch rejected as a whole (400) or answered with a malformed result:
        ask for each half separately; a single culprit is quarantined and resyncs."""
        if len(chunk) == 1:
            s = chunk[0]
            s.force_resync = True
            await self._failures.quarantine(s, "bad_token", exc)
            return [], []
        mid = len(chunk) // 2
        due: list[StreamRuntime] = []
        ok: list[StreamRuntime] = []
        for half in (chunk[:mid], chunk[mid:]):
            outcome = await self.ask(group, half)
            if outcome is None:
                return None
            due.extend(outcome[0])
            ok.extend(outcome[1])
        return due, ok
