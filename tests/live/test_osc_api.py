"""The OSC API fed datagram bytes: every request gets one ack or error that fits a datagram,
replies and other programs' messages get none, and nothing raises."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder, build_msg

from groove_live.live.osc_api import MAX_ECHO_CHARS, MAX_REPLY_BYTES, OscApi
from groove_live.live.osc_wire import decode_message
from groove_live.spec import ModelSpec


class OscMessage:
    """A reply read back with the strict decoder: every reply must pass it."""

    def __init__(self, datagram: bytes) -> None:
        assert len(datagram) <= MAX_REPLY_BYTES
        message = decode_message(datagram)
        self.address, self.params = message.address, list(message.args)

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

    def sample(self, temperature, seed):
        self.calls.append(("sample", (temperature, seed)))
        return (1.0 if temperature is None else temperature), (77 if seed is None else seed)

    def interpolate(self, bars, temperature, seed):
        self.calls.append(("interpolate", (bars, temperature, seed)))
        return (1.0 if temperature is None else temperature), (78 if seed is None else seed)

    def walk(self, step, every_bars, seed):
        self.calls.append(("walk", (step, every_bars, seed)))
        return 79 if seed is None else seed

    def set_bar_lookahead(self, lookahead_s):
        self.calls.append(("set_bar_lookahead", (lookahead_s,)))
        return min(lookahead_s, 1.5)  # a bar at 160 bpm: the real one clamps under a bar

    def add_target(self, host, port, requested_by=None):
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
    # The ack names the temperature and seed in use (sent back, they recall the groove).
    ("/groove/sample", [], ("sample", (None, None)), [1.0, 77]),
    ("/groove/sample", [0.5], ("sample", (0.5, None)), [0.5, 77]),
    ("/groove/sample", [1, 42], ("sample", (1.0, 42)), [1.0, 42]),
    ("/groove/walk", [], ("walk", (0.1, 1, None)), [pytest.approx(0.1), 1, 79]),
    ("/groove/walk", [0.25, 4], ("walk", (0.25, 4, None)), [0.25, 4, 79]),
    ("/groove/walk", [0.25, 4, 5], ("walk", (0.25, 4, 5)), [0.25, 4, 5]),
    ("/groove/walk", [0], ("walk", (0.0, 1, None)), [0.0, 1, 79]),
    ("/groove/interpolate", [8], ("interpolate", (8, None, None)), [8, 1.0, 78]),
    ("/groove/interpolate", [8.0, 0.5], ("interpolate", (8, 0.5, None)), [8, 0.5, 78]),
    ("/groove/interpolate", [8, 0.5, 9], ("interpolate", (8, 0.5, 9)), [8, 0.5, 9]),
    ("/groove/tempo", [174], ("set_tempo", (174.0, 0)), [174.0, 0]),
    ("/groove/tempo", [90, 4], ("set_tempo", (90.0, 4)), [90.0, 4]),
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
    ("/groove/lookahead", [1800], ("set_bar_lookahead", (1.8,)), [1500.0]),  # as clamped
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
    ("/groove/tempo", [120, 1, 2], "at most 2"),
    ("/groove/tempo", [120, -1], "must be in"),
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
    ("/groove/target", ["\u0661\u0662\u0667.0.0.1", 9000], "numeric IPv4"),  # Arabic-Indic digits
    ("/groove/target", ["\u00b927.0.0.1", 9000], "numeric IPv4"),  # a superscript one
    ("/groove/target", ["127.000.0.1", 9000], "numeric IPv4"),
    ("/groove/target", ["127.0.0.1 ", 9000], "numeric IPv4"),
    ("/groove/target", ["::1", 9000], "IPv6"),
    ("/groove/target", [127, 9000], "must be a string"),
    ("/groove/target", ["127.0.0.1", 70000], "must be in"),
    ("/groove/target", ["127.0.0.1", "x"], "must be a number"),
])
def test_bad_requests_get_an_error_naming_the_address(api, address, args, why):
    address_back, params = reply(api, address, *args)
    assert address_back == "/groove/error"
    assert params[0] == address and why in params[1]
    assert api.controls.calls == []


def error_reason(api, datagram):
    replies = api.handle(datagram, SENDER)
    assert len(replies) == 1, (datagram, replies)
    msg = OscMessage(replies[0])
    assert msg.address == "/groove/error", (datagram, msg.params)
    return msg.params[1]


def test_every_cut_of_a_message_is_an_error():
    api = OscApi(FakeControls())
    whole = typed("/groove/ping", ("f", 0.9), ("i", 7), ("s", "hello"), ("b", b"\x01\x02\x03"),
                  ("d", 2.5), ("h", 2**40), ("T", True), ("N", None))
    assert OscMessage(api.handle(whole, SENDER)[0]).address == "/groove/ack"
    for n in range(len(whole)):
        error_reason(api, whole[:n])
    assert api.controls.calls == []


def test_a_float_cut_short_is_refused_not_zero_padded(api):
    # python-osc pads the missing bytes with zeros and reads 0.0.
    dgram = build_msg("/groove/velocity", [0.8]).dgram[:-4]
    assert "float32 argument cut short" in error_reason(api, dgram)
    assert api.controls.calls == []


@pytest.mark.parametrize("tail", [b"\x00\x00\x00\x00", b"abcd", b"\x00", b"\x3f\x80\x00\x00" * 2])
def test_bytes_after_the_last_argument_are_refused(api, tail):
    dgram = build_msg("/groove/tempo", [120]).dgram + tail
    assert "after the last argument" in error_reason(api, dgram)
    assert api.controls.calls == []


@pytest.mark.parametrize("tag,payload", [("m", b"\x00\x90\x24\x7f"), ("c", b"\x00\x00\x00A"),
                                         ("r", b"\xff\x00\x00\xff"), ("t", b"\x00" * 8),
                                         ("[", b""), ("x", b""), ("\x7f", b"")])
def test_unknown_type_tags_are_refused(api, tag, payload):
    dgram = b"/groove/ping\x00\x00\x00\x00" + pad(b"," + tag.encode()) + payload
    assert "not supported" in error_reason(api, dgram)


def pad(raw: bytes) -> bytes:
    return raw + b"\x00" * (4 - len(raw) % 4)


@pytest.mark.parametrize("dgram,why", [
    (b"/groove/stop\x00\x00\x00\x01,\x00\x00\x00", "padding"),  # non-zero padding
    (b"/groove/stop\x00\x00\x00\x00,i\x00\x00", "cut short"),
    (b"/groove/stop\x00\x00\x00\x00", "no type tag"),
    (b"/groove/stop\x00\x00\x00\x00i\x00\x00\x00", "start with ','"),
    (b"/groove/stop", "not terminated"),
    (b"/groove/st\xffp\x00\x00\x00\x00,\x00\x00\x00", "not ASCII"),
    (b"/groove/ping\x00\x00\x00\x00,s\x00\x00\xff\xfe\x00\x00", "not UTF-8"),
    (b"/groove/ping\x00\x00\x00\x00,b\x00\x00\x00\x00\x00\x08ab\x00\x00", "does not fit"),
    (b"/groove/ping\x00\x00\x00\x00,b\x00\x00\xff\xff\xff\xff", "does not fit"),
    (b"/groove/ping\x00\x00\x00\x00,b\x00\x00\x00\x00\x00\x01ab\x00\x00", "padding"),
    (b"hello", "not an OSC message"),
    (b"#bundlX\x00" + b"\x00" * 8, "not an OSC message"),
])
def test_malformed_messages_name_the_problem(api, dgram, why):
    assert why in error_reason(api, dgram)


def test_doubles_beyond_float32_and_int64s_never_raise(api):
    dgram = typed("/groove/ping", ("d", 1e300), ("d", -3.4e39), ("h", -2**63), ("h", 2**63 - 1))
    ack = OscMessage(api.handle(dgram, SENDER)[0])
    assert ack.address == "/groove/ack"
    assert ack.params == ["/groove/ping", 1e300, -3.4e39, -2**63, 2**63 - 1]
    for route in ("/groove/tempo", "/groove/velocity", "/groove/lookahead"):
        assert "must be in" in error_reason(api, typed(route, ("d", 1e300)))
    assert "must be in" in error_reason(api, typed("/groove/interpolate", ("h", 2**62)))
    assert "finite" in error_reason(api, typed("/groove/tempo", ("d", float("nan"))))


@pytest.mark.parametrize("dgram", [
    build_msg("/groove/" + "x" * 60_000, []).dgram,
    build_msg("/groove/mute", ["k" * 60_000]).dgram,
    build_msg("/groove/quantize", ["\u00e9" * 20_000]).dgram,
    build_msg("/groove/target", ["h" * 60_000, 9000]).dgram,
    build_msg("/groove/ping", ["p" * 7_000] * 8).dgram,
    build_msg("/groove/tempo", ["q" * 60_000]).dgram,
    build_msg("/groove/tempo", [1, 2, 3]).dgram + b"z" * 60_000,
])
def test_huge_strings_get_one_reply_that_fits_a_datagram(api, dgram):
    (reply_dgram,) = api.handle(dgram, SENDER)
    msg = OscMessage(reply_dgram)
    assert len(reply_dgram) < 2000
    assert all(len(p) <= MAX_ECHO_CHARS + 100 for p in msg.params if isinstance(p, str))


@pytest.mark.parametrize("address", ["/groove/ack", "/groove/error", "/groove/hit", "/groove/bar",
                                     "/groove/sample/reply", "/groove/info.reply", "/done", "/fail",
                                     "/status.reply", "/n_go", "/sonic-pi/ack", "/reply", "/ping",
                                     "/"])
def test_replies_outputs_and_other_programs_messages_get_no_reply(api, address):
    assert api.handle(build_msg(address, ["/groove/tempo", "why"]).dgram, SENDER) == []
    # ... even malformed: answering them is how a loop with another program would start.
    assert api.handle(build_msg(address, [1.0]).dgram[:-2], SENDER) == []
    assert api.ignored == 2 and api.errors == 0 and api.controls.calls == []


def test_our_own_replies_fed_back_get_no_reply(api):
    replies = api.handle(build_msg("/groove/nope", []).dgram, SENDER)
    replies += api.handle(build_msg("/groove/ping", [1, "x"]).dgram, SENDER)
    assert len(replies) == 2
    for r in replies:
        assert api.handle(r, SENDER) == []


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
    # These prefixes make the address readable and ours, so the bytes after it must be judged.
    ours = [b"/groove/tempo\x00\x00\x00", b"/groove/sample\x00\x00,",
            b"/groove/mute\x00\x00\x00\x00,s", b"/groove/ping\x00\x00\x00\x00,",
            b"/groove/ping\x00\x00\x00\x00,dfihsbTFNI\x00\x00"]
    for k in range(3000):
        body = rng.integers(0, 256, rng.integers(0, 80), dtype=np.uint8).tobytes()
        if k % 3 == 0:  # also letters that are type tags, so arguments get read
            body = bytes(rng.choice(list(b"ifdhsbTFNI\x00\x00\x00,"), rng.integers(0, 40)))
        datagram = ours[k % len(ours)] + body
        replies = api.handle(datagram, SENDER)
        assert len(replies) == 1, datagram
        assert OscMessage(replies[0]).address in ("/groove/error", "/groove/ack")
    for k in range(3000):  # anything at all: at most one reply, never an exception
        body = rng.integers(0, 256, rng.integers(0, 80), dtype=np.uint8).tobytes()
        datagram = [b"", b"/", b"#bundle\x00"][k % 3] + body
        replies = api.handle(datagram, SENDER)
        assert len(replies) <= 1
        for r in replies:
            assert OscMessage(r).address in ("/groove/error", "/groove/ack")


def test_mutated_requests_are_refused_with_one_reply_that_fits():
    """Valid requests of every type, then cut short, given trailing bytes, an unknown type
    tag, a double beyond float32 or a huge string: one reply each, never an exception."""
    api = OscApi(FakeControls())
    rng = np.random.default_rng(1)
    valid = [typed("/groove/tempo", ("d", 120.0)), typed("/groove/sample", ("f", 0.5), ("h", 7)),
             typed("/groove/mute", ("s", "kick"), ("T", True)),
             typed("/groove/quantize", ("s", "bar")),
             typed("/groove/ping", ("b", b"\x01\x02\x03"), ("N", None), ("i", -1), ("d", 1e300)),
             typed("/groove/target", ("s", "127.0.0.1"), ("i", 9000))]
    kinds = {"cut": 0, "trailing": 0, "tag": 0, "double": 0, "string": 0}
    for k in range(1000):
        whole = valid[k % len(valid)]
        kind = list(kinds)[k % len(kinds)]
        kinds[kind] += 1
        if kind == "cut":
            dgram = whole[:rng.integers(0, len(whole))]
        elif kind == "trailing":
            dgram = whole + rng.integers(0, 256, rng.integers(1, 40), dtype=np.uint8).tobytes()
        elif kind == "tag":  # a type tag no one defined, in place of a real one
            tag_at = whole.index(b",") + 1
            dgram = whole[:tag_at] + bytes([rng.choice(list(b"mcrtxyz[]u@"))]) + whole[tag_at + 1:]
        elif kind == "double":
            dgram = typed(whole.split(b"\x00")[0].decode(),
                          ("d", float(rng.choice([1e39, -1e300, 3.5e38, 1.8e308]))))
        else:
            dgram = typed(whole.split(b"\x00")[0].decode(),
                          ("s", "x" * int(rng.integers(1_000, 60_000))))
        replies = api.handle(dgram, SENDER)
        assert len(replies) == 1, (kind, dgram[:80])
        msg = OscMessage(replies[0])
        if kind in ("cut", "trailing", "tag"):
            assert msg.address == "/groove/error", (kind, dgram[:80], msg.params)
    assert min(kinds.values()) == 200


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.sampled_from([b"", b"/groove/ping\x00\x00\x00\x00,",
                                                 b"#bundle\x00\x00\x00\x00\x00\x00\x00\x00\x01"]))
def test_any_bytes_get_at_most_one_reply_per_message_each_fitting_a_datagram(body, prefix):
    api = OscApi(FakeControls())
    replies = api.handle(prefix + body, SENDER)
    assert len(replies) <= 64
    for r in replies:
        assert OscMessage(r).address in ("/groove/error", "/groove/ack")


def test_a_bundle_header_with_a_lying_size_is_an_error(api):
    dgram = b"#bundle\x00" + b"\x00" * 8 + struct.pack(">i", 1000) + b"/groove/stop\x00\x00\x00\x00"
    assert "malformed" in error_reason(api, dgram) and "does not fit" in error_reason(api, dgram)


def test_every_address_is_documented_in_docs_osc_md(api):
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[2] / "docs" / "osc.md").read_text()
    missing = [a for a in api.routes if f"`{a}`" not in doc]
    assert not missing, f"docs/osc.md does not document {missing}"


class CountingControls(FakeControls):
    def __init__(self):
        super().__init__()
        self.info_builds = 0
        self.bpm = 120.0

    def info(self):
        self.info_builds += 1
        return [("model", "m"), ("bpm", self.bpm)]


def test_info_under_a_flood_is_built_at_most_once_per_max_age():
    from groove_live.live.osc_api import INFO_MAX_AGE_S

    now = [100.0]
    controls = CountingControls()
    api = OscApi(controls, monotonic_s=lambda: now[0])
    first = reply(api, "/groove/info")
    controls.bpm = 90.0  # changed behind the API's back (the clock thread does this)
    for _ in range(50):  # a flood inside one max age: one build, the same reply every time
        assert reply(api, "/groove/info") == first
        reply(api, "/groove/ping", 1)  # pings do not change what info says
    assert controls.info_builds == 1
    now[0] += 1.01 * INFO_MAX_AGE_S  # older than the max age: built again, with the change
    assert reply(api, "/groove/info")[1] == ["/groove/info", "model", "m", "bpm", 90.0]
    assert controls.info_builds == 2


def test_any_other_request_makes_the_next_info_fresh():
    now = [100.0]
    controls = CountingControls()
    api = OscApi(controls, monotonic_s=lambda: now[0])
    reply(api, "/groove/info")
    controls.bpm = 140.0
    reply(api, "/groove/tempo", 140.0)  # what a client does before asking for info again
    assert reply(api, "/groove/info")[1][-1] == 140.0
    assert controls.info_builds == 2
    reply(api, "/groove/info", "extra")  # info with arguments is an error, never the snapshot
    assert controls.info_builds == 2
