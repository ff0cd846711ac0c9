"""Receiving OSC with the kernel's receive time, for clients that measure timing.

The tests and `benchmarks/live_timing.py` judge lateness by when a datagram reached the socket,
not by when a busy Python thread got round to reading it: SO_TIMESTAMPNS asks Linux to attach
that time to each datagram. Elsewhere it falls back to the time of the read.
"""
from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable

from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # 35 on Linux


@dataclass(frozen=True)
class Received:
    address: str
    params: list
    arrival_s: float  # on time.monotonic()'s scale
    arrival_wall_s: float  # on time.time()'s scale (what OSC time tags use)
    timetag_wall_s: float | None  # the enclosing bundle's time tag, if any


def _messages(datagram: bytes) -> list[tuple[OscMessage, float | None]]:
    if datagram.startswith(b"#bundle"):
        bundle = OscBundle(datagram)
        return [(m, bundle.timestamp) for m in bundle if isinstance(m, OscMessage)]
    return [(OscMessage(datagram), None)]


class TimestampedListener:
    """A UDP socket on 127.0.0.1 and a thread that hands each OSC message it receives, with its
    kernel arrival time, to `on_message`."""

    def __init__(self, on_message: Callable[[list[Received]], None], port: int = 0,
                 receive_buffer_bytes: int = 4 << 20) -> None:
        self._on_message = on_message
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.1)  # how often the thread looks at the stop flag
        self.port: int = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="osc-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancdata, _, _ = self.sock.recvmsg(65536, 64)
            except socket.timeout:
                continue
            except OSError:
                return  # closed under us
            arrival_s, arrival_wall_s = time.monotonic(), time.time()
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", payload[:16])
                    kernel_wall_s = sec + nsec * 1e-9
                    arrival_s -= arrival_wall_s - kernel_wall_s
                    arrival_wall_s = kernel_wall_s
            try:
                items = _messages(data)
            except Exception:  # not OSC: nothing a timing client can use
                continue
            self._on_message([Received(m.address, list(m.params), arrival_s, arrival_wall_s, tag)
                              for m, tag in items])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        self.sock.close()
