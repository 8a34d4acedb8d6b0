"""Building blocks of hub discovery shared by ``notifier discover`` and the running service.

* ``token_provider``: a credential's access tokens (static, or refreshed and rotated through the
  state store, exactly as the Relationship Service client gets them).
* ``projects_client``: the hub and project listings for one credential, on a Data Management
  budget of their own (50 requests per minute, docs/hub-discovery.md), never the credential's
  Relationship Service budget: discovery cannot starve relationship polling.
* ``list_projects``: one discovery of a hub subscription, every project with its verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import aiohttp

from notifier.config import Config, CredentialConfig, SubscriptionConfig
from notifier.core.budget import RequestBudget
from notifier.core.projects import Project, ProjectRules, Verdict, decide
from notifier.source.auth import (
    RefreshingTokenProvider,
    RefreshObserver,
    StaticTokenProvider,
    TokenProvider,
)
from notifier.source.client import ClientObserver, RelationshipClient
from notifier.source.projects import ProjectsClient

# The published limit of GET /hubs and GET /hubs/{hub_id}/projects (each 50 per minute); one
# budget for both keeps the stricter reading.
DM_REQUESTS_PER_MINUTE = 50
DM_BURST = 5
# A listing still failing (or still rate limited) after this long counts as a failed discovery:
# the last known list is kept and the watcher retries later.
DM_DEADLINE_SECONDS = 120.0


def token_provider(config: Config, cred: CredentialConfig, session: aiohttp.ClientSession,
                   store: Any, observer: RefreshObserver | None = None, *,
                   refresh_guard: Callable[[], AbstractAsyncContextManager[None]] | None = None,
                   ) -> TokenProvider:
    """The credential's access tokens; refresh tokens rotate through ``store`` (a credential
    without a configured refresh token uses only what ``notifier auth login`` stored)."""
    if cred.access_token is not None:
        return StaticTokenProvider(cred.access_token.get_secret_value())
    assert cred.client_secret is not None
    seed = cred.refresh_token.get_secret_value() if cred.refresh_token else ""
    return RefreshingTokenProvider(
        cred.name, session,
        token_url=config.source.resolved_token_url,
        client_id=cred.client_id or "",
        client_secret=cred.client_secret.get_secret_value(),
        seed_refresh_token=seed,
        store=store,
        observer=observer,
        refresh_guard=refresh_guard,
    )


def projects_client(config: Config, cred_name: str, session: aiohttp.ClientSession,
                    tokens: TokenProvider, observer: ClientObserver | None = None,
                    ) -> ProjectsClient:
    """The hub and project listings as ``cred_name``'s user, on their own budget."""
    budget = RequestBudget(DM_REQUESTS_PER_MINUTE, DM_BURST, name=f"{cred_name}/dm")
    caller = RelationshipClient(
        session,
        base_url=config.source.base_url,
        credential_name=cred_name,
        tokens=tokens,
        budget=budget,
        region=config.source.region,
        timeout=config.source.timeout,
        max_attempts=config.source.max_attempts,
        concurrency=1,
        deadline=DM_DEADLINE_SECONDS,
        observer=observer,
    )
    return ProjectsClient(caller, config.source.base_url)


def rules_of(sub: SubscriptionConfig) -> ProjectRules:
    """The compiled ``projects:`` filter of a hub subscription (everything without one)."""
    if sub.projects is None:
        return ProjectRules()
    return ProjectRules.compile(sub.projects.include, sub.projects.exclude)


@dataclass(frozen=True, slots=True)
class Listed:
    project: Project
    verdict: Verdict


async def list_projects(client: ProjectsClient, sub: SubscriptionConfig) -> list[Listed]:
    """Every project of the subscription's hub, with whether it is watched and why not."""
    assert sub.hub_id is not None
    rules = rules_of(sub)
    return [Listed(p, decide(p, rules)) for p in await client.projects(sub.hub_id)]
