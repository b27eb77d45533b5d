"""``schoolgate-agent requests``: the unblock requests pupils sent from the block page.

They wait in the state directory until the collector (a later part of schoolgate) takes them;
until then, and for a school without a collector, staff read them here and grant what they
approve with ``schoolgate-agent allow``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict

from schoolgate.agent.config import AgentConfig

EXIT_RUNTIME = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", default="text", choices=["text", "json"])
    parser.add_argument(
        "--pending", action="store_true", help="only those not yet sent to the collector"
    )
    parser.add_argument("--limit", type=int, default=1000, help="at most this many (oldest first)")


def run(config: AgentConfig, output: str, pending: bool, limit: int) -> int:
    from schoolgate.agent.blockpage import StoreError, UnblockStore  # noqa: PLC0415

    store = UnblockStore(config.state_dir)
    found = []
    # Reading never creates the store: an agent without a block page has none.
    if store.path.exists():
        try:
            found = store.pending(limit) if pending else store.list(limit=limit)
        except StoreError as exc:
            print(f"schoolgate-agent: cannot read the unblock requests: {exc}", file=sys.stderr)
            return EXIT_RUNTIME
        finally:
            store.close()
    if output == "json":
        print(json.dumps([asdict(r) for r in found], indent=1, ensure_ascii=False))
        return 0
    if not found:
        waiting = " waiting" if pending else ""
        print(
            f"no unblock requests{waiting} in {store.path} (the state directory of {config.source})"
        )
    for r in found:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created))
        device = " ".join(x for x in (r.client_ip, r.hostname or "", r.mac or "") if x)
        print(f"{r.id}  {when}  {r.name}  ({r.category or 'no category'})  group {r.group}")
        print(f"          from {device}" + ("" if r.shipped else ", not yet sent"))
        if r.reason:
            print(f"          reason: {r.reason}")
    if found:
        print(
            "grant one with: schoolgate-agent allow NAME --group GROUP [--device MAC|IP]"
            " --for 2h --reason TEXT"
        )
    return 0
