"""A tiny stdlib-only DNS client, used to poll servers for readiness and check their answers.

It is deliberately independent of the code under test (and of dnslib), so a bug there cannot
make the harness think a server is ready when it is not.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import struct
import time
from dataclasses import dataclass

TYPE_A = 1
TYPE_AAAA = 28
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


@dataclass(frozen=True)
class Answer:
    """The parts of a response the harness cares about."""

    rcode: str
    addresses: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.rcode} {','.join(self.addresses) or '(no address)'}"


def encode_query(qid: int, name: str, qtype: int) -> bytes:
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # RD set, one question
    labels = b"".join(
        bytes([len(part)]) + part.encode("ascii") for part in name.rstrip(".").split(".")
    )
    return header + labels + b"\x00" + struct.pack("!HH", qtype, 1)


def skip_name(packet: bytes, offset: int) -> int:
    """Offset just past the (possibly compressed) name starting at offset."""
    while True:
        length = packet[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:  # a compression pointer ends the name
            return offset + 2
        offset += 1 + length


def decode_response(packet: bytes) -> Answer:
    _qid, flags, qdcount, ancount, _ns, _ar = struct.unpack_from("!HHHHHH", packet)
    offset = 12
    for _ in range(qdcount):
        offset = skip_name(packet, offset) + 4
    addresses: list[str] = []
    for _ in range(ancount):
        offset = skip_name(packet, offset)
        rtype, _cls, _ttl, rdlength = struct.unpack_from("!HHIH", packet, offset)
        offset += 10
        rdata = packet[offset : offset + rdlength]
        if rtype in (TYPE_A, TYPE_AAAA):
            addresses.append(str(ipaddress.ip_address(rdata)))
        offset += rdlength
    return Answer(RCODES.get(flags & 0x000F, str(flags & 0x000F)), tuple(addresses))


def query(
    port: int, name: str, qtype: int = TYPE_A, timeout: float = 0.2, host: str = "127.0.0.1"
) -> Answer | None:
    """One UDP query; None on timeout or on a reply that does not match the question."""
    qid = secrets.randbelow(0x10000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        try:
            sock.send(encode_query(qid, name, qtype))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                packet = sock.recv(4096)
                if len(packet) >= 12 and struct.unpack_from("!H", packet)[0] == qid:
                    return decode_response(packet)
        except (TimeoutError, ConnectionRefusedError):
            return None
        except (struct.error, IndexError, ValueError):
            return None  # a malformed reply counts as no reply
    return None
