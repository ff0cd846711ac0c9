"""A small OSC test client: sends requests, collects replies and hits with arrival times."""
from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass

from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import build_msg


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux


@dataclass
class Received:
    address: str
    params: list
    arrival_s: float  # time.monotonic()
    arrival_wall_s: float  # time.time()
    timetag_wall_s: float | None  # the enclosing bundle's time tag, if any


class OscClient:
    def __init__(self, server: tuple[str, int], port: int = 0) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.received: list[Received] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancdata, _, _ = self.sock.recvmsg(65536, 64)
            except socket.timeout:
                continue
            except OSError:
                return
            arrival_s, arrival_wall_s = time.monotonic(), time.time()
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    # The kernel's receive time: a busy test process cannot blur it.
                    sec, nsec = struct.unpack("qq", payload[:16])
                    kernel_wall_s = sec + nsec * 1e-9
                    arrival_s -= arrival_wall_s - kernel_wall_s
                    arrival_wall_s = kernel_wall_s
            items = []
            if data.startswith(b"#bundle"):
                bundle = OscBundle(data)
                items = [(m, bundle.timestamp) for m in bundle if isinstance(m, OscMessage)]
            else:
                items = [(OscMessage(data), None)]
            with self._cond:
                for m, tag in items:
                    self.received.append(Received(m.address, list(m.params), arrival_s,
                                                  arrival_wall_s, tag))
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
        self._stop.set()
        self._thread.join(timeout=1.0)
        self.sock.close()
