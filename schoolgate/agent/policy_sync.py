"""The policy down, the unblock requests up: the agent's regular call on its collector.

Every ``[collector] policy_interval`` seconds (60 by default), and once at start:

1. Unblock requests the block page stored and the collector does not have yet go up to
   ``POST URL/api/v1/requests``; a 2xx marks them shipped. The collector keeps each request
   once by its id, so a request sent twice is not doubled.
2. ``GET URL/api/v1/policy`` with the ETag of the policy last received. 304 means nothing
   changed. A new policy is checked together with the local configuration before anything is
   written: one that does not fit is refused, logged and counted, and the agent keeps the
   policy it has. One that fits is written to ``STATE_DIR/policy`` (see ``policy.central``),
   where the agent's reload picks it up within a few seconds; the central exceptions are
   applied within a second.

When the collector cannot be reached the agent runs on the copy on disk, and asks again with
backoff. Nothing here waits on the DNS path or holds it up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx

from schoolgate.agent.activity.settings import UploadSettings
from schoolgate.agent.blockpage.store import StoreError, UnblockStore
from schoolgate.agent.collector_http import (
    backoff,
    close,
    http_client,
    read_token,
    retry_after,
)
from schoolgate.agent.config import ConfigError
from schoolgate.agent.policy.central import (
    CentralFiles,
    CentralPolicy,
    CentralPolicyError,
    exceptions_from_json,
    policy_from_json,
)
from schoolgate.agent.throttle import Throttle

log = logging.getLogger(__name__)

POLICY_PATH: Final = "/api/v1/policy"
REQUESTS_PATH: Final = "/api/v1/requests"
REQUESTS_PER_POST: Final = 500
MAX_POLICY_BYTES: Final = 8 * 1024 * 1024
_LOG_EVERY: Final = 300.0

OUTCOMES: Final = ("updated", "unchanged", "refused", "failed")

# Checks a policy against the local configuration; raises ConfigError when it does not fit.
Check = Callable[[CentralPolicy], object]


@dataclass
class SyncCounters:
    policy: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    requests_shipped: int = 0
    last_success: float | None = None  # the last time the collector answered about the policy


class PolicySync:
    def __init__(
        self,
        settings: UploadSettings,
        state_dir: Path,
        check: Check,
        requests: Callable[[], UnblockStore | None],
    ) -> None:
        self.settings = settings
        self.files = CentralFiles(state_dir)
        self.check = check
        self.requests = requests
        self.counters = SyncCounters()
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self._warn = Throttle(_LOG_EVERY)
        self._refused: str | None = None  # the ETag of a policy refused, not to log it again

    def start(self) -> None:
        self._client = http_client(self.settings)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="policy-sync")

    async def stop(self) -> None:
        await close(self._task, self._client)
        self._task, self._client = None, None

    async def _run(self) -> None:
        while True:
            try:
                pause = await self.sync_once()
            except Exception:
                # The loop must outlive anything it did not foresee: the policy on disk stands.
                log.exception("asking the collector for the policy failed; trying again")
                self.counters.policy["failed"] += 1
                self._failures += 1
                pause = backoff(self._failures, self.settings.policy_interval)
            await asyncio.sleep(pause)

    def _next(self) -> float:
        # A little jitter, so that a district's schools started together do not stay in step.
        interval = self.settings.policy_interval
        return interval * random.uniform(0.9, 1.0)

    def _failed(self, why: str, wait: float | None = None) -> float:
        self.counters.policy["failed"] += 1
        self._failures += 1
        pause = wait if wait is not None else backoff(self._failures, self.settings.policy_interval)
        if self._warn():
            log.warning(
                "cannot reach the collector at %s for the policy (%s); the agent keeps the "
                "policy it has and asks again in %.0f s",
                self.settings.url,
                why,
                pause,
            )
        return pause

    async def sync_once(self) -> float:
        """Ship requests, fetch the policy; seconds to wait before the next time."""
        token = await asyncio.to_thread(read_token, self.settings.token_file, self._warn)
        if token is None:
            return self._failed("no token")
        await self._ship_requests(token)
        return await self._fetch_policy(token)

    async def _ship_requests(self, token: str) -> None:
        store = self.requests()  # the block page's store, when the page is on
        if store is None:
            return
        assert self._client is not None
        try:
            waiting = await asyncio.to_thread(store.pending, REQUESTS_PER_POST)
        except StoreError as exc:
            if self._warn():
                log.error("cannot read the unblock requests to ship them: %s", exc)
            return
        if not waiting:
            return
        body = {
            "requests": [
                {
                    "id": r.id,
                    "created": r.created,
                    "client_ip": r.client_ip,
                    "mac": r.mac or "",
                    "hostname": r.hostname or "",
                    "group": r.group,
                    "name": r.name,
                    "category": r.category or "",
                    "reason": r.reason or "",
                    "language": r.language,
                }
                for r in waiting
            ]
        }
        try:
            async with asyncio.timeout(self.settings.timeout * 2):
                answer = await self._client.post(
                    REQUESTS_PATH, json=body, headers={"Authorization": f"Bearer {token}"}
                )
        except (httpx.HTTPError, TimeoutError) as exc:
            if self._warn():
                log.warning("cannot ship unblock requests (%s); they wait on this box", exc)
            return
        if not 200 <= answer.status_code < 300:
            if self._warn():
                log.warning(
                    "the collector did not take %d unblock requests (HTTP %d: %s); they wait "
                    "on this box",
                    len(waiting),
                    answer.status_code,
                    answer.text[:300],
                )
            return
        try:
            await asyncio.to_thread(store.mark_shipped, [r.id for r in waiting])
        except StoreError as exc:
            # They go again next time; the collector keeps each once.
            log.error("cannot mark unblock requests as shipped: %s", exc)
            return
        self.counters.requests_shipped += len(waiting)

    async def _fetch_policy(self, token: str) -> float:
        assert self._client is not None
        try:
            current = await asyncio.to_thread(self.files.read_policy)
        except CentralPolicyError as exc:
            log.error("%s; asking the collector for the whole policy again", exc)
            current = None
        etag = await asyncio.to_thread(self.files.read_etag) if current is not None else None
        headers = {"Authorization": f"Bearer {token}"}
        if etag is not None:
            headers["If-None-Match"] = etag
        try:
            async with asyncio.timeout(self.settings.timeout * 2):
                answer = await self._client.get(POLICY_PATH, headers=headers)
        except (httpx.HTTPError, TimeoutError) as exc:
            return self._failed(f"{type(exc).__name__}: {exc}")
        status = answer.status_code
        if status == 304:
            return self._succeeded("unchanged")
        if status == 429 or status >= 500:
            wait = retry_after(answer.headers.get("retry-after"), time.time())
            return self._failed(f"HTTP {status}", wait)
        if status in (401, 403):
            return self._failed(f"HTTP {status}: the collector refuses the token")
        if status != 200:
            return self._failed(f"HTTP {status}: check collector.url")
        if len(answer.content) > MAX_POLICY_BYTES:
            return self._refuse(answer.headers.get("etag", ""), "the policy is too large")
        etag = answer.headers.get("etag", "")
        try:
            doc = json.loads(answer.content)
            if not isinstance(doc, dict):
                raise CentralPolicyError("expected a JSON object")
            policy = policy_from_json(doc, time.time())
            exceptions = exceptions_from_json(doc.get("exceptions", []))
        except (ValueError, CentralPolicyError) as exc:
            return self._refuse(etag, f"not a policy: {exc}")
        if current is None or dict(current.sections) != dict(policy.sections):
            try:
                await asyncio.to_thread(self.check, policy)
            except ConfigError as exc:
                return self._refuse(etag, str(exc))
        # The policy file is rewritten only when the policy changed: the agent reloads its
        # configuration when it does, and exceptions need no reload. The ETag, covering both,
        # goes last, so a failure part way asks for everything again.
        await asyncio.to_thread(self.files.write_exceptions, exceptions)
        if not policy.same_as(current):
            await asyncio.to_thread(self.files.write_policy, policy)
            log.info("received %s", policy.describe())
        await asyncio.to_thread(self.files.write_etag, etag)
        self._refused = None
        return self._succeeded("updated")

    def _succeeded(self, outcome: str) -> float:
        self.counters.policy[outcome] += 1
        self.counters.last_success = time.time()
        if self._failures:
            log.info("the collector answers about the policy again")
        self._failures = 0
        return self._next()

    def _refuse(self, etag: str, why: str) -> float:
        self.counters.policy["refused"] += 1
        # The collector answered: it is reachable, so this is not a failure to back off from.
        self.counters.last_success = time.time()
        self._failures = 0
        if etag != self._refused or not etag:
            log.error("refused the collector's policy, keeping the one in force: %s", why)
            self._refused = etag
        return self._next()
