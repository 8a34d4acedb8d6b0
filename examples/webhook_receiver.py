#!/usr/bin/env python3
"""Receive the notifier's relationship events as webhooks, verified, each change once.

    pip install aiohttp standardwebhooks
    WEBHOOK_SECRET=whsec_... python examples/webhook_receiver.py --port 8081

- Every call is verified with the Standard Webhooks reference library (``standardwebhooks``):
  the signature over ``webhook-id.webhook-timestamp.body`` with the shared ``whsec_`` secret,
  and a timestamp within five minutes. A call that does not verify gets 401 and is not handled.
  During a secret rotation the notifier sends one signature per secret; either verifies.
- Single mode (``application/cloudevents+json``, one event) and batch mode
  (``application/cloudevents-batch+json``, a JSON array of events) are both accepted.
- Delivery is at least once: deduplicate on each event's ``id`` (in batch mode the
  ``webhook-id`` names the batch, which may be regrouped on a retry; the event ids never
  change). Seen ids are kept in SQLite.
- Answer 2xx only once the events are safely handled: anything else makes the notifier retry.

``handle()`` is where your code goes; here it prints one JSON line per new event.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


def handle(event: dict[str, Any]) -> None:
    """Your business logic. Here: one line per change on stdout."""
    print(json.dumps(event, sort_keys=True), flush=True)


def make_app(secret: str, dedup_db: str) -> web.Application:
    verifier = Webhook(secret)
    db = sqlite3.connect(dedup_db, isolation_level=None)
    db.execute("CREATE TABLE IF NOT EXISTS seen (event_id TEXT PRIMARY KEY)")

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verifier.verify(body, dict(request.headers))
        except WebhookVerificationError:
            return web.Response(status=401, text="signature does not verify")
        if request.content_type == BATCH:
            events = json.loads(body)
        elif request.content_type == SINGLE:
            events = [json.loads(body)]
        else:
            return web.Response(status=415, text=f"unexpected {request.content_type}")
        db.execute("BEGIN IMMEDIATE")
        try:
            for event in events:
                cur = db.execute("INSERT OR IGNORE INTO seen (event_id) VALUES (?)",
                                 (event["id"],))
                if cur.rowcount == 1:  # a redelivered event is acknowledged, not handled again
                    handle(event)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks", receive)
    app.on_cleanup.append(lambda _: _close(db))
    return app


async def _close(db: sqlite3.Connection) -> None:
    db.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--dedup-db", default="seen-webhooks.db", help="SQLite file of seen ids")
    args = parser.parse_args()
    secret = os.environ.get("WEBHOOK_SECRET", "")
    if not secret.startswith("whsec_"):
        parser.error("set WEBHOOK_SECRET to the sink's secret (whsec_...)")
    print(f"listening on http://{args.host}:{args.port}/hooks", file=sys.stderr, flush=True)
    web.run_app(make_app(secret, args.dedup_db), host=args.host, port=args.port,
                print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
