"""The cluster's DNS for the node agent's pods: a UDP responder on a loopback address that answers the A
query of a Service's name (`svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`) with 127.0.0.1, every
Service running on this one node. The operator's worker init container waits on `nslookup MASTER`, which
asks a name server and never reads /etc/hosts; the trainer's own lookups use both."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable

ADDRESS = "127.0.0.153"  # the pods' /etc/resolv.conf names it


def _qname(packet: bytes, at: int) -> tuple[str, int]:
    labels = []
    while packet[at]:
        n = packet[at]
        labels.append(packet[at + 1:at + 1 + n].decode("ascii", "replace"))
        at += 1 + n
    return ".".join(labels).lower(), at + 1


def answer(packet: bytes, known: Callable[[str, str | None], bool]) -> bytes:
    """The reply to one query: A 127.0.0.1 for a known Service, an empty NOERROR for its other types, NXDOMAIN
    for any other name."""
    (qid,) = struct.unpack("!H", packet[:2])
    name, end = _qname(packet, 12)
    qtype, _ = struct.unpack("!HH", packet[end:end + 4])
    question = packet[12:end + 4]
    parts = name.split(".")
    suffixes = ([], ["svc"], ["svc", "cluster", "local"])
    found = (len(parts) == 1 and known(parts[0], None)) or any(
        len(parts) == 2 + len(s) and parts[2:] == s and known(parts[0], parts[1]) for s in suffixes)
    if not found:
        return struct.pack("!HHHHHH", qid, 0x8183, 1, 0, 0, 0) + question
    if qtype != 1:
        return struct.pack("!HHHHHH", qid, 0x8180, 1, 0, 0, 0) + question
    record = struct.pack("!HHHIH", 0xC00C, 1, 1, 5, 4) + socket.inet_aton("127.0.0.1")
    return struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question + record


class DnsServer:
    """Serves `answer` on ADDRESS:53 from a daemon thread until `close`."""

    def __init__(self, known: Callable[[str, str | None], bool]) -> None:
        self.known = known
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ADDRESS, 53))
        self.sock.settimeout(0.5)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="cluster-dns", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                packet, peer = self.sock.recvfrom(512)
                self.sock.sendto(answer(packet, self.known), peer)
            except (TimeoutError, OSError, ValueError, struct.error, IndexError):
                continue

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close()
