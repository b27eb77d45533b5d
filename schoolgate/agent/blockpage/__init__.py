"""The block page: what a pupil's browser shows for a blocked name, and unblock requests.

With ``filter.block_response = "blockpage"`` a blocked name resolves to the block page's
address; a browser that visits it over plain HTTP gets a page saying what was blocked and why,
and a form to ask for it to be unblocked. See docs/blockpage.md.
"""

from __future__ import annotations

from schoolgate.agent.blockpage.info import BlockInfo, Explain
from schoolgate.agent.blockpage.server import (
    BlockPageError,
    BlockPageServer,
    BlockPageSettings,
    ConnectionLimits,
)
from schoolgate.agent.blockpage.store import (
    DuplicateRequest,
    RequestNotStored,
    StoreError,
    TooManyRequests,
    UnblockRequest,
    UnblockStore,
)
from schoolgate.agent.blockpage.web import BlockPageCounters

__all__ = [
    "BlockInfo",
    "BlockPageCounters",
    "BlockPageError",
    "BlockPageServer",
    "BlockPageSettings",
    "ConnectionLimits",
    "DuplicateRequest",
    "Explain",
    "RequestNotStored",
    "StoreError",
    "TooManyRequests",
    "UnblockRequest",
    "UnblockStore",
]
