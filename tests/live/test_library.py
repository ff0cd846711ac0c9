"""serve --library DIR: /groove/load, /groove/morph and /groove/save on the FakeClock (files
touched on the worker, never on the OSC thread; a bad file gets one error and the music goes
on), and one round over UDP."""
from __future__ import annotations

import socket

import numpy as np
import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import build_msg

from groove_live.live.library import phrase_patterns
from groove_live.live.osc_wire import decode_message
from groove_live.midi_io import read_pattern, write_pattern
from groove_live.pattern import Patterns

from .conftest import OfflineUdpServer, offline_server
from .fake_engine import FakeEngine

SENDER = ("127.0.0.1", 57121)


class EncodingEngine(FakeEngine):
    """FakeEngine plus an encoder: mu is a fixed projection of the flat pattern."""

    has_encoder = True

    def __init__(self) -> None:
        super().__init__()
        cells = self.spec.steps * self.spec.step_size
        self._enc = np.random.default_rng(99).standard_normal((cells, self.spec.z_size))
        self.encodes = 0

    def encode(self, patterns: Patterns):
        self.encodes += 1
        flat = patterns.cleaned().to_flat().reshape(len(patterns), -1)
        mu = (flat @ self._enc / 10.0).astype(np.float32)
        return mu, np.ones_like(mu)


@pytest.fixture
def live(tmp_path):
    engine = EncodingEngine()
    server, clock, rec = offline_server(engine, bpm=120.0, library=str(tmp_path))
    sent = []
    server.library.send = lambda reply, sender: sent.append(OscMessage(reply))
    server.run_until(clock.now() + 1.0)
    return server, clock, engine, tmp_path, sent


def reply(server, address, *args):
    out, = server.api.handle(build_msg(address, list(args)).dgram, SENDER)
    msg = OscMessage(out)
    return msg.address, list(msg.params)


def last_z(server) -> np.ndarray:
    return server.scheduler.committed[-1][3].z


def a_groove_file(path, spec) -> Patterns:
    p = Patterns.empty(1, spec)
    for step in range(0, spec.steps, 4):
        p.hits[0, step, 0] = 1.0
        p.velocities[0, step, 0] = 0.8
    p.hits[0, 4::8, 1] = 1.0
    p.velocities[0, 4::8, 1] = 0.7
    write_pattern(path, p, spec)
    return p


def test_load_encodes_on_the_worker_and_plays_the_groove(live):
    server, clock, engine, folder, sent = live
    a_groove_file(folder / "funk.mid", engine.spec)
    assert reply(server, "/groove/load", "funk") == ("/groove/ack", ["/groove/load", "funk"])
    assert engine.encodes == 0  # the OSC thread only checked the name
    server.run_until(clock.now() + 6.0)
    assert engine.encodes == 1 and not sent
    want, _ = read_pattern(folder / "funk.mid", engine.spec)
    np.testing.assert_array_equal(last_z(server), engine.encode(want)[0][0])


def test_morph_heads_to_the_file_over_bars(live):
    server, clock, engine, folder, sent = live
    a_groove_file(folder / "target.mid", engine.spec)
    assert reply(server, "/groove/morph", "target.mid", 2)[0] == "/groove/ack"
    server.run_until(clock.now() + 3.0)
    server.run_until(clock.now() + 12.0)
    want, _ = read_pattern(folder / "target.mid", engine.spec)
    np.testing.assert_allclose(last_z(server), engine.encode(want)[0][0], atol=1e-5)


def test_save_writes_the_playing_phrase_atomically_and_never_replaces(live):
    server, clock, engine, folder, sent = live
    assert reply(server, "/groove/save", "keep")[0] == "/groove/ack"
    assert not (folder / "keep.mid").exists()  # written on the worker, not here
    server.run_until(clock.now() + 0.5)
    path = folder / "keep.mid"
    assert path.is_file() and [p.name for p in folder.iterdir()] == ["keep.mid"]  # no temp left
    got, bpm = read_pattern(path, engine.spec, bar=0)
    playing = phrase_patterns(server.worker.playing_phrase(), engine.spec)
    np.testing.assert_array_equal(got.hits, playing.hits)
    assert bpm == pytest.approx(120.0)
    before = path.read_bytes()
    reply(server, "/groove/sample", 1.0, 5)
    server.run_until(clock.now() + 4.0)
    assert reply(server, "/groove/save", "keep")[0] == "/groove/ack"
    server.run_until(clock.now() + 0.5)
    assert path.read_bytes() == before
    assert len(sent) == 1 and sent[0].address == "/groove/error"
    assert "never replaces" in sent[0].params[1]


def test_a_bad_file_gets_one_error_and_the_music_goes_on(live):
    server, clock, engine, folder, sent = live
    (folder / "junk.mid").write_bytes(b"MThd not really")
    assert reply(server, "/groove/load", "junk")[0] == "/groove/ack"
    z_before = last_z(server)
    bars_before = len(server.scheduler.committed)
    server.run_until(clock.now() + 6.0)
    assert [m.address for m in sent] == ["/groove/error"]
    assert sent[0].params[0] == "/groove/load" and "junk.mid" in sent[0].params[1]
    assert len(server.scheduler.committed) > bars_before + 2
    np.testing.assert_array_equal(last_z(server), z_before)
    reply(server, "/groove/load", "missing")
    server.run_until(clock.now() + 1.0)
    assert "no missing.mid" in sent[-1].params[1]


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", ".hidden", "", "x" * 300, "a b"])
def test_only_plain_names(live, name):
    server, *_ = live
    address, params = reply(server, "/groove/load", name)
    assert address == "/groove/error" and "plain name" in params[1]


def test_without_a_library_one_error_says_how_to_enable_it():
    server, clock, _ = offline_server(EncodingEngine(), bpm=120.0)
    for args in (("/groove/load", "x"), ("/groove/morph", "x", 4), ("/groove/save", "x")):
        address, params = reply(server, *args)
        assert address == "/groove/error" and "--library" in params[1]


def test_load_and_save_over_udp(tmp_path):
    a_groove_file(tmp_path / "groove.mid", EncodingEngine().spec)
    rig = OfflineUdpServer(engine=EncodingEngine(), library=str(tmp_path))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(2.0)
            for msg in (("/groove/load", "groove"), ("/groove/save", "out")):
                client.sendto(build_msg(msg[0], list(msg[1:])).dgram, ("127.0.0.1", rig.port))
                rig.handle(1)
                ack = decode_message(client.recv(65536))
                assert ack.address == "/groove/ack" and ack.args[0] == msg[0]
                rig.run_until(rig.clock.now() + 3.0)
        assert (tmp_path / "out.mid").is_file()
        assert rig.server.library.loads == 1 and rig.server.library.saves == 1
    finally:
        rig.close()


def test_serve_refuses_a_library_folder_that_is_not_there(tmp_path):
    from click.testing import CliRunner

    from groove_live.live.cli import serve

    result = CliRunner().invoke(serve, ["--library", str(tmp_path / "nope"), "--port", "0"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "--library" in lines[0] and "no such folder" in lines[0]
