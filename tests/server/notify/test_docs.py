"""docs/notifications.md: its example receiver checks the collector's posts and refuses a
forged one, and its example configurations are ones the collector accepts."""

from __future__ import annotations

import re
import threading
import time
from http.server import HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from schoolgate.server.notify import ledger
from schoolgate.server.repository import SqlRepository
from schoolgate.server.settings import parse
from tests.support.certs import ScratchPKI

from .conftest import alert, noon_after, notifier, notify_toml, send, started

DOC = Path(__file__).resolve().parents[3] / "docs" / "notifications.md"
_RECEIVER = re.compile(r"<!-- example: receiver -->\n```python\n(.*?)```", re.DOTALL)
_TOML = re.compile(r"## Examples\n.*?```toml\n(.*?)```.*?```toml\n(.*?)```", re.DOTALL)


def _receiver(secret_file: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    (code,) = _RECEIVER.findall(DOC.read_text(encoding="utf-8"))
    monkeypatch.setenv("SCHOOLGATE_WEBHOOK_SECRET_FILE", str(secret_file))
    namespace: dict[str, Any] = {"__name__": "docs_receiver"}
    exec(compile(code, str(DOC), "exec"), namespace)  # our own documentation
    return namespace


def test_the_example_receiver_checks_the_signature(
    repo: SqlRepository,
    secrets: Path,
    pki: ScratchPKI,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = _receiver(secrets / "webhook.secret", monkeypatch)
    server = HTTPServer(("127.0.0.1", 0), example["Receiver"])
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        made = notifier(repo, secrets, notify_toml(pki, webhook_url=url))
        now = noon_after(time.time())
        started(made, now)
        site = repo.add_site("north-primary")[0]
        send(repo, site, [alert(1, name="<script>.example")])
        made.run(now)
        forged = httpx.post(
            url,
            content=b'{"site": "north-primary", "alerts": []}',
            headers={
                "X-Schoolgate-Timestamp": str(int(time.time())),
                "X-Schoolgate-Signature": "sha256=" + "0" * 64,
            },
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    out = capsys.readouterr().out
    assert out == "north-primary high self-harm '<script>.example'\n"
    assert forged.status_code == 401
    with repo.engine.connect() as conn:
        (message,) = ledger.recent(conn, 10)
    assert message.outcome == "sent"


def test_the_example_configurations_are_accepted(tmp_path: Path) -> None:
    trust, relay = _TOML.search(DOC.read_text(encoding="utf-8")).groups()  # type: ignore[union-attr]
    (tmp_path / "smtp.password").write_text("a password\n", encoding="utf-8")
    (tmp_path / "webhook.secret").write_text("f" * 64 + "\n", encoding="utf-8")
    n = parse(trust, "trust example", tmp_path).notify
    assert n is not None
    assert n.emails_for("south-academy") == (
        "head@south.sch.example",
        "itdesk@trust.example",
        "safeguarding@south.sch.example",
    )
    assert n.webhook_for("north-infants")
    n = parse(relay, "relay example", tmp_path).notify
    assert n is not None and n.immediate == {"critical"} and n.smtp is not None
    assert (n.smtp.port, n.smtp.tls, n.smtp.username) == (25, "none", "")
