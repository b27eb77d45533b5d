"""The DNS server process stays small: heavy work is imported only by the list worker, the
block page's web stack only when the block page is enabled, and scapy only when the network
monitor runs. (The database layer is the activity log's, which every agent keeps.)"""

from __future__ import annotations

import subprocess
import sys


def test_the_agent_does_not_import_the_workers_libraries() -> None:
    code = (
        "import sys, schoolgate.agent.cli, schoolgate.agent.app, schoolgate.agent.jobs\n"
        "print(' '.join(m for m in ('numpy', 'httpx', 'tarfile', 'starlette', 'uvicorn', "
        "'jinja2', 'scapy', 'schoolgate.agent.blockpage') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == ""
