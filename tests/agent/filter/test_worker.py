"""The list worker: downloads checked and kept or refused, one build, put in service."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schoolgate.agent.dns.wire import name_labels, text_to_wire
from schoolgate.agent.filter.compiled import CompiledLists
from schoolgate.agent.filter.downloads import DownloadStore
from schoolgate.agent.filter.sources import ListSource
from schoolgate.agent.filter.store import ListStore, RemoteSource, UpdateError
from schoolgate.agent.filter.worker import run
from tests.support.lists_server import ListServer, gz, tarball

LIMITS = {
    "timeout": 2.0,
    "max_download_bytes": 1 << 20,
    "max_redirects": 3,
    "max_list_bytes": 4 << 20,
}


def names(n: int, prefix: str = "n") -> str:
    return "".join(f"{prefix}{i}.example\n" for i in range(n))


class Updater:
    """Runs update jobs against one state directory, the way the agent builds them."""

    def __init__(self, state: Path, server: ListServer) -> None:
        self.lists_dir = state / "lists"
        self.downloads = DownloadStore(self.lists_dir)
        self.server = server
        self.remote: list[dict[str, str]] = []
        self.sources: list[dict[str, Any]] = []

    def add(self, name: str, category: str, path: str, fmt: str = "auto", member: str = "") -> None:
        url = self.server.url(path)
        key = RemoteSource(name, url, url, member).key
        self.remote.append(
            {"name": name, "url": url, "shown_url": url, "member": member, "key": key}
        )
        self.sources.append(
            {
                "name": name,
                "category": category,
                "path": str(self.downloads.last_good(name)),
                "format": fmt,
            }
        )

    def add_file(self, name: str, category: str, path: Path) -> None:
        self.sources.insert(
            0, {"name": name, "category": category, "path": str(path), "format": "auto"}
        )

    def update(self, force: bool = False, fetch: bool = True) -> dict[str, Any]:
        return run(
            {
                "lists_dir": str(self.lists_dir),
                "sources": self.sources,
                "remote": self.remote,
                "fetch": fetch,
                "limits": LIMITS,
                "max_shrink": 0.5,
                "force": force,
            }
        )

    def lookup(self, name: str) -> list[str]:
        lists = CompiledLists(self.lists_dir / "current.sgl")
        try:
            wire = text_to_wire(name)
            return lists.category_names(lists.lookup(wire, name_labels(wire)))
        finally:
            lists.close()


@pytest.fixture
def updater(tmp_path: Path, list_server: ListServer) -> Iterator[Updater]:
    yield Updater(tmp_path / "state", list_server)


def test_every_format_is_downloaded_and_compiled(updater: Updater, list_server: ListServer) -> None:
    list_server.serve("/plain.txt", "# plain\nplain.example\n")
    list_server.serve("/hosts", "0.0.0.0 hosts.example\n127.0.0.1 localhost\n")
    list_server.serve("/adblock.txt", "! adblock\n||adblock.example^\n")
    list_server.serve("/plain.gz", gz("zipped.example\n"))
    list_server.serve(
        "/ut1.tar.gz",
        tarball({"adult/domains": "ut1.example\n", "adult/urls": "ut1.example/page\n"}),
    )
    updater.add("plain", "malware", "/plain.txt", "domains")
    updater.add("hosts", "gambling", "/hosts", "hosts")
    updater.add("adblock", "phishing", "/adblock.txt", "adblock")
    updater.add("zipped", "drugs", "/plain.gz")
    updater.add("ut1", "adult", "/ut1.tar.gz", "ut1", member="adult/domains")
    result = updater.update()
    assert result["ok"], result
    assert {n: s["status"] for n, s in result["sources"].items()} == dict.fromkeys(
        ["plain", "hosts", "adblock", "zipped", "ut1"], "updated"
    )
    assert result["names"] == 5
    assert updater.lookup("www.plain.example") == ["malware"]
    assert updater.lookup("hosts.example") == ["gambling"]
    assert updater.lookup("adblock.example") == ["phishing"]
    assert updater.lookup("a.zipped.example") == ["drugs"]
    assert updater.lookup("ut1.example") == ["adult"]
    # The last good copies are kept, unpacked, for a restart without internet.
    assert updater.downloads.last_good("ut1").read_text() == "ut1.example\n"
    state = updater.downloads.load().sources["plain"]
    assert state.entries == 1 and state.error == "" and state.last_success > 0


def test_a_second_update_asks_conditionally_and_keeps_the_copy(
    updater: Updater, list_server: ListServer
) -> None:
    list_server.serve(
        "/l.txt", names(10), etag='"v1"', last_modified="Sat, 21 Nov 2026 10:00:00 GMT"
    )
    updater.add("l", "malware", "/l.txt")
    first = updater.update()
    assert first["ok"]
    second = updater.update()
    assert second["sources"]["l"] == {"status": "unchanged", "error": "", "entries": 10}
    # Nothing new: the build in service stays, without a rebuild.
    assert second["build_id"] == first["build_id"]
    assert second["report"] == [f"nothing changed: build {first['build_id']} stays in service"]
    asked = list_server.asked("/l.txt")
    assert "If-None-Match" not in asked[0].headers
    assert asked[1].headers["If-None-Match"] == '"v1"'
    assert asked[1].headers["If-Modified-Since"] == "Sat, 21 Nov 2026 10:00:00 GMT"
    assert updater.lookup("n3.example") == ["malware"]


def test_no_validators_are_sent_without_a_copy_to_fall_back_on(
    updater: Updater, list_server: ListServer
) -> None:
    list_server.serve("/l.txt", names(10), etag='"v1"')
    updater.add("l", "malware", "/l.txt")
    assert updater.update()["ok"]
    updater.downloads.last_good("l").unlink()
    result = updater.update()
    assert result["sources"]["l"]["status"] == "updated"
    assert "If-None-Match" not in list_server.asked("/l.txt")[1].headers


@pytest.mark.parametrize(
    ("route", "error"),
    [
        pytest.param({"status": 500}, "HTTP 500", id="server-error"),
        pytest.param({"status": 404}, "HTTP 404", id="not-found"),
        pytest.param({"body": gz(names(400))[:300]}, "truncated or corrupt", id="broken-archive"),
        pytest.param({"body": b"x" * (2 << 20)}, "too large", id="oversized"),
        pytest.param({"delay": 3.0}, "timed out", id="slow-server"),
    ],
)
def test_a_failed_download_keeps_the_last_good_copy(
    updater: Updater, list_server: ListServer, route: dict[str, Any], error: str
) -> None:
    list_server.serve("/l.txt", names(10))
    list_server.serve("/other.txt", "other.example\n")
    updater.add("l", "malware", "/l.txt")
    updater.add("other", "phishing", "/other.txt")
    assert updater.update()["ok"]
    list_server.serve("/l.txt", **{"body": b"", **route})
    result = updater.update()
    assert result["ok"]
    failed = result["sources"]["l"]
    assert failed["status"] == "failed"
    assert error in failed["error"]
    assert failed["entries"] == 10
    assert updater.lookup("n9.example") == ["malware"]
    assert updater.lookup("other.example") == ["phishing"]
    state = updater.downloads.load().sources["l"]
    assert state.failures == 1 and error in state.error
    assert list(updater.downloads.dir.glob("*.new")) == []
    assert list(updater.downloads.dir.glob(".*")) == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param("# nothing here\n", "no entries", id="empty"),
        pytest.param(
            "<html>\n<body>\n<p>Sign in to the hotel wifi</p>\n</body>\n</html>\nok.example\n",
            "not a list",
            id="captive-portal-page",
        ),
        pytest.param(names(4), "shrank from 10 to 4 entries", id="lost-more-than-half"),
    ],
)
def test_a_suspicious_download_is_refused(
    updater: Updater, list_server: ListServer, body: str, reason: str
) -> None:
    list_server.serve("/l.txt", names(10), etag='"v1"')
    updater.add("l", "malware", "/l.txt")
    assert updater.update()["ok"]
    list_server.serve("/l.txt", body, etag='"v2"')
    result = updater.update()
    refused = result["sources"]["l"]
    assert refused["status"] == "refused"
    assert reason in refused["error"]
    assert updater.lookup("n9.example") == ["malware"]
    assert updater.downloads.last_good("l").read_text() == names(10)
    # The refused copy's validators are not kept: the next attempt fetches it again.
    assert updater.downloads.load().sources["l"].etag == '"v1"'


def test_force_accepts_a_list_that_shrank(updater: Updater, list_server: ListServer) -> None:
    list_server.serve("/l.txt", names(10))
    updater.add("l", "malware", "/l.txt")
    assert updater.update()["ok"]
    list_server.serve("/l.txt", names(4))
    assert updater.update()["sources"]["l"]["status"] == "refused"
    forced = updater.update(force=True)
    assert forced["sources"]["l"] == {"status": "updated", "error": "", "entries": 4}
    assert updater.lookup("n9.example") == []


def test_a_source_never_downloaded_is_left_out_not_fatal(
    updater: Updater, list_server: ListServer
) -> None:
    list_server.serve("/good.txt", "good.example\n")
    updater.add("good", "malware", "/good.txt")
    updater.add("missing", "adult", "/missing.txt")
    result = updater.update()
    assert result["ok"]
    assert result["sources"]["missing"]["status"] == "failed"
    assert result["sources"]["missing"]["entries"] == 0
    assert updater.lookup("good.example") == ["malware"]
    lists = CompiledLists(updater.lists_dir / "current.sgl")
    assert [s.name for s in lists.sources] == ["good"]
    lists.close()


def test_compile_only_uses_the_copies_on_disk(updater: Updater, list_server: ListServer) -> None:
    list_server.serve("/l.txt", names(3))
    updater.add("l", "malware", "/l.txt")
    assert updater.update()["ok"]
    list_server.serve("/l.txt", status=500)
    result = updater.update(fetch=False)
    assert result["ok"]
    assert result["sources"]["l"]["status"] == "kept"
    assert len(list_server.asked("/l.txt")) == 1
    assert updater.lookup("n2.example") == ["malware"]


def test_local_files_and_downloads_share_one_build(
    updater: Updater, list_server: ListServer, tmp_path: Path
) -> None:
    local = tmp_path / "local.txt"
    local.write_text("shared.example\nlocal.example\n")
    list_server.serve("/l.txt", "shared.example\n")
    updater.add_file("local", "games", local)
    updater.add("l", "malware", "/l.txt")
    result = updater.update()
    assert result["names"] == 2
    assert sorted(updater.lookup("shared.example")) == ["games", "malware"]
    lists = CompiledLists(updater.lists_dir / "current.sgl")
    assert lists.meta["category_names"] == {"games": 2, "malware": 1}
    lists.close()


def test_sources_no_longer_configured_lose_their_files(
    updater: Updater, list_server: ListServer
) -> None:
    list_server.serve("/a.txt", "a.example\n")
    list_server.serve("/b.txt", "b.example\n")
    updater.add("a", "malware", "/a.txt")
    updater.add("b", "malware", "/b.txt")
    assert updater.update()["ok"]
    updater.remote.pop()
    updater.sources.pop()
    assert updater.update()["ok"]
    assert updater.downloads.last_good("a").exists()
    assert not updater.downloads.last_good("b").exists()


def test_confidential_lists_are_never_quoted(updater: Updater, list_server: ListServer) -> None:
    list_server.serve("/feed.txt", "http://whole.example/\nhttp://secret.example/some/page.html\n")
    updater.add("feed", "child-abuse", "/feed.txt", "urls")
    updater.sources[-1]["confidential"] = True
    result = updater.update()
    assert updater.lookup("whole.example") == ["child-abuse"]
    text = "\n".join(result["report"])
    assert "1 unsupported" in text
    assert "secret.example" not in text
    assert "withheld" in text


def test_the_worker_process_speaks_json(tmp_path: Path, list_server: ListServer) -> None:
    list_server.serve("/l.txt", "a.example\n")
    url = list_server.url("/l.txt")
    downloads = DownloadStore(tmp_path / "lists")
    job = {
        "lists_dir": str(tmp_path / "lists"),
        "sources": [
            {
                "name": "l",
                "category": "malware",
                "path": str(downloads.last_good("l")),
                "format": "auto",
            }
        ],
        "remote": [
            {"name": "l", "url": url, "shown_url": url, "member": "", "key": "k"},
        ],
        "fetch": True,
        "limits": LIMITS,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "schoolgate.agent.filter.worker"],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] and result["names"] == 1
    assert (tmp_path / "lists" / "current.sgl").exists()


@pytest.mark.asyncio
async def test_store_update_reports_a_build_that_failed(tmp_path: Path) -> None:
    store = ListStore(tmp_path)
    gone = tmp_path / "gone.txt"
    with pytest.raises(UpdateError) as info:
        await store.update(
            [ListSource("gone", "adult", gone)],
            [RemoteSource("r", "http://127.0.0.1:9/x", "http://127.0.0.1:9/x")],
            LIMITS,
            0.5,
        )
    assert "cannot read" in str(info.value)
    assert info.value.sources["r"]["status"] == "failed"
    assert not store.current.exists()


def test_a_compile_keeps_the_downloaded_copies(updater: Updater, list_server: ListServer) -> None:
    list_server.serve("/l.txt", names(3))
    updater.add("l", "malware", "/l.txt")
    assert updater.update()["ok"]
    compile_only = run({"lists_dir": str(updater.lists_dir), "sources": updater.sources})
    assert compile_only["ok"]
    assert updater.downloads.last_good("l").read_text() == names(3)
    assert updater.lookup("n1.example") == ["malware"]


def test_a_changed_member_or_url_is_another_list(updater: Updater, list_server: ListServer) -> None:
    archive = tarball(
        {"ut1/adult/domains": "porn.example\n", "ut1/gambling/domains": "bet.example\n"}
    )
    list_server.serve("/ut1.tar.gz", archive, etag='"v1"')
    updater.add("ut1", "gambling", "/ut1.tar.gz", "ut1", member="ut1/adult/domains")
    assert updater.update()["ok"]
    assert updater.lookup("porn.example") == ["gambling"]
    updater.remote.clear()
    updater.sources.clear()
    updater.add("ut1", "gambling", "/ut1.tar.gz", "ut1", member="ut1/gambling/domains")
    result = updater.update()
    # No validators from the other member's copy: the archive is fetched again, and one entry
    # against the old copy's one is no shrink.
    assert "If-None-Match" not in list_server.asked("/ut1.tar.gz")[-1].headers
    assert result["sources"]["ut1"]["status"] == "updated"
    assert updater.lookup("porn.example") == []
    assert updater.lookup("bet.example") == ["gambling"]


def test_a_source_that_breaks_the_client_fails_alone(
    updater: Updater, list_server: ListServer
) -> None:
    list_server.serve("/good.txt", "good.example\n")
    updater.add("good", "malware", "/good.txt")
    updater.add("odd", "adult", "/x")
    updater.remote[-1]["url"] = "http://[::1/x"  # past the configuration's checks somehow
    result = updater.update()
    assert result["ok"]
    assert result["sources"]["good"]["status"] == "updated"
    assert result["sources"]["odd"]["status"] == "failed"


def test_a_failed_build_keeps_the_last_good_copies(
    updater: Updater, list_server: ListServer, tmp_path: Path
) -> None:
    list_server.serve("/l.txt", names(4))
    updater.add("l", "malware", "/l.txt")
    assert updater.update()["ok"]
    list_server.serve("/l.txt", names(6))
    local = tmp_path / "local.txt"
    updater.add_file("local", "games", local)  # not there: the compile fails
    result = updater.update()
    assert not result["ok"] and "cannot read" in result["error"]
    assert updater.downloads.last_good("l").read_text() == names(4)
    assert list(updater.downloads.dir.glob("*.new")) == []
    assert updater.lookup("n3.example") == ["malware"]
    local.write_text("local.example\n")
    assert updater.update()["sources"]["l"]["status"] == "updated"
    assert updater.downloads.last_good("l").read_text() == names(6)


def test_the_shrink_check_survives_a_lost_state_file(
    updater: Updater, list_server: ListServer
) -> None:
    list_server.serve("/l.txt", names(10))
    updater.add("l", "malware", "/l.txt")
    assert updater.update()["ok"]
    state = updater.downloads.load()
    state.sources["l"].entries = 0  # as if state.json had been lost and rebuilt
    updater.downloads.save(state)
    list_server.serve("/l.txt", names(2))
    assert updater.update()["sources"]["l"]["status"] == "refused"
