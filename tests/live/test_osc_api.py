"""The OSC API fed datagram bytes: every message gets an ack or an error, nothing raises."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder, build_msg

from groove_live.live.osc_api import OscApi
from groove_live.spec import ModelSpec

SENDER = ("127.0.0.1", 57121)


class FakeControls:
    def __init__(self):
        self.spec = ModelSpec(z_size=8)
        self.calls = []
        self.targets = set()

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)

        def record(*args):
            self.calls.append((name, args))
        return record

    def add_target(self, host, port):
        self.calls.append(("add_target", (host, port)))
        self.targets.add((host, port))
        return True

    def remove_target(self, host, port):
        self.calls.append(("remove_target", (host, port)))
        return (host, port) in self.targets and not self.targets.discard((host, port))

    def info(self):
        return [("model", "m"), ("bpm", 120.0), ("min_ready_bars", float("inf"))]


@pytest.fixture
def api():
    return OscApi(FakeControls())


def reply(api, address, *args, sender=SENDER):
    replies = api.handle(build_msg(address, list(args)).dgram, sender)
    assert len(replies) == 1
    msg = OscMessage(replies[0])
    return msg.address, list(msg.params)


def typed(address, *typed_args):
    b = OscMessageBuilder(address)
    for t, v in typed_args:
        b.add_arg(v, t)
    return b.build().dgram


@pytest.mark.parametrize("address,args,call,ack", [
    ("/groove/sample", [], ("sample", (None, None)), []),
    ("/groove/sample", [0.5], ("sample", (0.5, None)), [0.5]),
    ("/groove/sample", [1, 42], ("sample", (1.0, 42)), [1.0, 42]),
    ("/groove/walk", [], ("walk", (0.1, 1)), [pytest.approx(0.1), 1]),
    ("/groove/walk", [0.25, 4], ("walk", (0.25, 4)), [0.25, 4]),
    ("/groove/walk", [0], ("walk", (0.0, 1)), [0.0, 1]),
    ("/groove/interpolate", [8], ("interpolate", (8, None)), [8]),
    ("/groove/interpolate", [8.0, 0.5], ("interpolate", (8, 0.5)), [8, 0.5]),
    ("/groove/tempo", [174], ("set_tempo", (174.0,)), [174.0]),
    ("/groove/start", [], ("start_playing", ()), []),
    ("/groove/stop", [], ("stop_playing", ()), []),
    ("/groove/temperature", [1.5], ("set_temperature", (1.5,)), [1.5]),
    ("/groove/sync", [], ("sync", ()), []),
    ("/groove/velocity", [0.5], ("set_velocity_amount", (0.5,)), [0.5]),
    ("/groove/timing", [0], ("set_timing_amount", (0.0,)), [0.0]),
    ("/groove/mute", ["snare"], ("set_muted", ([1], True)), ["snare", 1]),
    ("/groove/mute", ["kick", 0], ("set_muted", ([0], False)), ["kick", 0]),
    ("/groove/mute", [42, "on"], ("set_muted", ([2], True)), [42, 1]),
    ("/groove/mute", ["all", 1], ("set_muted", (list(range(9)), True)), ["all", 1]),
    ("/groove/quantize", ["phrase"], ("set_quantize", ("phrase",)), ["phrase"]),
    ("/groove/lookahead", [250], ("set_bar_lookahead", (0.25,)), [250.0]),
])
def test_valid_messages_are_acked_and_handed_over(api, address, args, call, ack):
    address_back, params = reply(api, address, *args)
    assert address_back == "/groove/ack"
    assert params[0] == address and params[1:] == ack
    assert api.controls.calls[-1] == call


def test_target_defaults_to_the_sender_and_untarget_removes(api):
    assert reply(api, "/groove/target") == ("/groove/ack", ["/groove/target", "127.0.0.1", 57121])
    assert reply(api, "/groove/target", "127.0.0.1", 9000)[1][1:] == ["127.0.0.1", 9000]
    assert reply(api, "/groove/target", 4560)[1][1:] == ["127.0.0.1", 4560]
    assert reply(api, "/groove/untarget", 9000)[0] == "/groove/ack"
    assert reply(api, "/groove/untarget", 9000)[0] == "/groove/error"


def test_info_replies_flat_key_value_pairs(api):
    address, params = reply(api, "/groove/info")
    assert address == "/groove/ack"
    assert params == ["/groove/info", "model", "m", "bpm", 120.0, "min_ready_bars", -1.0]


def test_bool_types_are_not_numbers(api):
    replies = api.handle(typed("/groove/tempo", ("T", True)), SENDER)
    msg = OscMessage(replies[0])
    assert msg.address == "/groove/error" and "must be a number" in msg.params[1]


@pytest.mark.parametrize("address,args,why", [
    ("/groove/nope", [], "unknown address"),
    ("/groove", [], "unknown address"),
    ("/groove/tempo", [], "needs"),
    ("/groove/tempo", ["fast"], "must be a number"),
    ("/groove/tempo", [float("nan")], "finite"),
    ("/groove/tempo", [float("inf")], "finite"),
    ("/groove/tempo", [-float("inf")], "finite"),
    ("/groove/tempo", [1e9], "must be in"),
    ("/groove/tempo", [0], "must be in"),
    ("/groove/tempo", [120, 1], "at most 1"),
    ("/groove/sample", [5.5], "must be in"),
    ("/groove/sample", [-1], "must be in"),
    ("/groove/sample", [1e30], "must be in"),
    ("/groove/sample", [1.0, -5], "must be in"),
    ("/groove/sample", [1.0, 2.5], "whole number"),
    ("/groove/sample", [1.0, 2**31 - 1 + 0.0 + 10], "must be in"),
    ("/groove/sample", ["hot"], "must be a number"),
    ("/groove/walk", [2.0], "must be in"),
    ("/groove/walk", [0.1, 0], "must be in"),
    ("/groove/walk", [0.1, 10_000], "must be in"),
    ("/groove/interpolate", [], "needs"),
    ("/groove/interpolate", [0], "must be in"),
    ("/groove/interpolate", [3.5], "whole number"),
    ("/groove/temperature", [float("nan")], "finite"),
    ("/groove/velocity", [1.5], "must be in"),
    ("/groove/timing", [-0.1], "must be in"),
    ("/groove/mute", ["cowbell"], "unknown voice"),
    ("/groove/mute", [99], "no voice plays pitch"),
    ("/groove/mute", ["kick", 7], "must be in"),
    ("/groove/quantize", ["beat"], "bar or phrase"),
    ("/groove/lookahead", [1e6], "must be in"),
    ("/groove/target", ["example.com", 9000], "numeric IPv4"),
    ("/groove/target", ["127.0.0.1", 70000], "must be in"),
    ("/groove/target", ["127.0.0.1", "x"], "must be a number"),
])
def test_bad_requests_get_an_error_naming_the_address(api, address, args, why):
    address_back, params = reply(api, address, *args)
    assert address_back == "/groove/error"
    assert params[0] == address and why in params[1]
    assert api.controls.calls == []


def test_truncated_datagrams_are_errors():
    api = OscApi(FakeControls())
    whole = build_msg("/groove/sample", [0.9, 7]).dgram
    for n in range(1, len(whole)):
        replies = api.handle(whole[:n], SENDER)
        assert len(replies) == 1
        msg = OscMessage(replies[0])
        # Cut inside the arguments can still leave a valid shorter message; never a crash.
        assert msg.address in ("/groove/error", "/groove/ack")
    assert sum(1 for n in range(1, len(whole))
               if OscMessage(api.handle(whole[:n], SENDER)[0]).address == "/groove/error") >= len(whole) - 8


def test_bundles_get_one_reply_per_message_and_nested_bundles_work(api):
    inner = OscBundleBuilder(IMMEDIATELY)
    inner.add_content(build_msg("/groove/stop", []))
    outer = OscBundleBuilder(IMMEDIATELY)
    outer.add_content(build_msg("/groove/tempo", [100]))
    outer.add_content(build_msg("/groove/bogus", []))
    outer.add_content(inner.build())
    replies = [OscMessage(r) for r in api.handle(outer.build().dgram, SENDER)]
    assert sorted((m.address, m.params[0]) for m in replies) == [
        ("/groove/ack", "/groove/stop"), ("/groove/ack", "/groove/tempo"),
        ("/groove/error", "/groove/bogus")]


def test_random_bytes_never_raise_and_always_get_one_error():
    api = OscApi(FakeControls())
    rng = np.random.default_rng(0)
    prefixes = [b"", b"/", b"/groove/tempo\x00\x00\x00", b"#bundle\x00", b"/groove/sample\x00\x00,",
                b"/groove/mute\x00\x00\x00\x00,s"]
    for k in range(3000):
        body = rng.integers(0, 256, rng.integers(0, 80), dtype=np.uint8).tobytes()
        datagram = prefixes[k % len(prefixes)] + body
        replies = api.handle(datagram, SENDER)
        assert replies, datagram
        for r in replies:
            assert OscMessage(r).address in ("/groove/error", "/groove/ack")


def test_a_bundle_header_with_a_lying_size_is_an_error(api):
    dgram = b"#bundle\x00" + b"\x00" * 8 + struct.pack(">i", 1000) + b"/groove/stop\x00\x00\x00\x00"
    msg = OscMessage(api.handle(dgram, SENDER)[0])
    assert msg.address == "/groove/error" and "malformed" in msg.params[1]


def test_every_address_is_documented_in_docs_osc_md(api):
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[2] / "docs" / "osc.md").read_text()
    missing = [a for a in api.routes if f"`{a}`" not in doc]
    assert not missing, f"docs/osc.md does not document {missing}"
