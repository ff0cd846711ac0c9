"""A small OSC test client: sends requests, collects replies and hits with arrival times."""
from __future__ import annotations

import threading

from pythonosc.osc_message_builder import build_msg

from groove_live.live.osc_listen import Received, TimestampedListener

__all__ = ["OscClient", "Received"]


class OscClient:
    """Talks to one server from a kernel-timestamping socket (see groove_live.live.osc_listen)."""

    def __init__(self, server: tuple[str, int], port: int = 0) -> None:
        self.server = server
        self.received: list[Received] = []
        self._cond = threading.Condition()
        self._listener = TimestampedListener(self._keep, port)
        self.sock = self._listener.sock
        self.port = self._listener.port

    def _keep(self, items: list[Received]) -> None:
        with self._cond:
            self.received.extend(items)
            self._cond.notify_all()

    def send(self, address: str, *args) -> None:
        self.sock.sendto(build_msg(address, list(args)).dgram, self.server)

    def send_raw(self, datagram: bytes) -> None:
        self.sock.sendto(datagram, self.server)

    def messages(self, address: str | None = None) -> list[Received]:
        with self._cond:
            return [r for r in self.received if address is None or r.address == address]

    def wait_for(self, predicate, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout_s)

    def request(self, address: str, *args, timeout_s: float = 2.0) -> Received:
        """Send and wait for the ack/error that names this address."""
        n = len([r for r in self.messages() if r.params[:1] == [address]])
        self.send(address, *args)
        ok = self.wait_for(lambda c: len([r for r in c.messages() if r.params[:1] == [address]
                                          and r.address in ("/groove/ack", "/groove/error")]) > n,
                           timeout_s)
        if not ok:
            raise TimeoutError(f"no reply to {address} within {timeout_s} s")
        return [r for r in self.messages() if r.params[:1] == [address]
                and r.address in ("/groove/ack", "/groove/error")][-1]

    def close(self) -> None:
        self._listener.close()
