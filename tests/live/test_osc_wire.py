"""The strict OSC decoder and the reply encoder, against python-osc and against themselves."""
from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings, strategies as st
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder, build_msg

from groove_live.live.osc_wire import (IMPULSE, MAX_MESSAGES_PER_PACKET, WireError, decode_message,
                                       decode_packet, encode_message)


def typed(address, *typed_args):
    b = OscMessageBuilder(address)
    for t, v in typed_args:
        b.add_arg(v, t)
    return b.build().dgram


def test_every_supported_type_decodes_as_python_osc_builds_it():
    dgram = typed("/a/b", ("i", -7), ("f", 0.5), ("s", "h\u00e9"), ("b", b"\x00\x01\x02\x03\x04"),
                  ("h", -2**63), ("d", 1e300), ("T", True), ("F", False), ("N", None))
    m = decode_message(dgram)
    assert m.address == "/a/b" and m.type_tags == "ifsbhdTFN"
    assert m.args == (-7, 0.5, "h\u00e9", b"\x00\x01\x02\x03\x04", -2**63, 1e300, True, False,
                      None)
    # python-osc cannot build I
    assert decode_message(b"/a/b\x00\x00\x00\x00,I\x00\x00").args == (IMPULSE,)


def test_symbols_are_strings():
    dgram = b"/x\x00\x00" + b",S\x00\x00" + b"kick\x00\x00\x00\x00"
    assert decode_message(dgram).args == ("kick",)


@pytest.mark.parametrize("string", ["", "abc", "abcd", "abcdefg"])
def test_string_padding_is_exact(string):
    dgram = build_msg("/x", [string]).dgram
    assert decode_message(dgram).args == (string,)
    with pytest.raises(WireError):
        decode_message(dgram + b"\x00\x00\x00\x00")  # one padding word too many
    with pytest.raises(WireError):
        decode_message(dgram[:-1])


def test_errors_carry_the_address_once_it_is_read():
    with pytest.raises(WireError) as e:
        decode_message(build_msg("/groove/tempo", [1.0]).dgram[:-1])
    assert e.value.address == "/groove/tempo"
    with pytest.raises(WireError) as e:
        decode_message(b"/groove/tem")
    assert e.value.address == ""


def test_bundles_flatten_in_order_and_their_sizes_are_checked():
    inner = OscBundleBuilder(IMMEDIATELY)
    inner.add_content(build_msg("/b", [2]))
    outer = OscBundleBuilder(IMMEDIATELY)
    outer.add_content(build_msg("/a", [1]))
    outer.add_content(inner.build())
    outer.add_content(build_msg("/c", ["x"]))
    dgram = outer.build().dgram
    assert [(m.address, m.args) for m in decode_packet(dgram)] == [
        ("/a", (1,)), ("/b", (2,)), ("/c", ("x",))]
    boundaries, index = {}, 16
    for k in range(3):  # a bundle cut between elements is a valid shorter bundle (OSC has no count)
        index += 4 + struct.unpack_from(">i", dgram, index)[0]
        boundaries[index] = k + 1  # each element holds one message (the second, in a bundle)
    for n in range(len(dgram)):
        if n in boundaries:
            assert len(decode_packet(dgram[:n])) == boundaries[n]
            continue
        with pytest.raises(WireError):
            decode_packet(dgram[:n])
    with pytest.raises(WireError, match="bytes after the last argument"):
        # the first element claims 4 bytes more than its message: trailing bytes inside it
        bad = bytearray(dgram)
        size = struct.unpack_from(">i", bad, 16)[0]
        struct.pack_into(">i", bad, 16, size + 4)
        decode_packet(bytes(bad[:20 + size]) + b"\x00" * 4 + bytes(bad[20 + size:]))


def test_too_many_messages_or_too_deep_bundles_are_refused():
    many = OscBundleBuilder(IMMEDIATELY)
    for _ in range(MAX_MESSAGES_PER_PACKET + 1):
        many.add_content(build_msg("/groove/info", []))
    with pytest.raises(WireError, match="more than 64"):
        decode_packet(many.build().dgram)
    element = build_msg("/groove/info", []).dgram
    for depth in range(10):
        element = b"#bundle\x00" + b"\x00" * 7 + b"\x01" + struct.pack(">i", len(element)) + element
        if depth <= 8:
            assert len(decode_packet(element)) == 1
    with pytest.raises(WireError, match="nested too deep"):
        decode_packet(element)


def test_encoder_picks_the_narrowest_type_that_holds_the_value():
    m = decode_message(encode_message("/r", [1, 2**31, -2**31 - 1, 0.5, 3.4e38, 3.5e38,
                                             float("inf"), "s", b"ab", True, False, None, IMPULSE]))
    assert m.type_tags == "ihhffdfsbTFNI"
    assert m.args[:4] == (1, 2**31, -2**31 - 1, 0.5) and m.args[5] == 3.5e38
    assert OscMessage(encode_message("/r", [1, 0.25, "x", b"yz"])).params == [1, 0.25, "x", b"yz"]


def test_encoder_refuses_what_osc_cannot_carry():
    with pytest.raises(ValueError):
        encode_message("/r", ["a\x00b"])
    with pytest.raises(TypeError):
        encode_message("/r", [object()])


values = st.one_of(
    st.integers(-2**63, 2**63 - 1),
    st.floats(allow_nan=False, width=64),
    st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
            max_size=40),
    st.binary(max_size=40), st.booleans(), st.none(), st.just(IMPULSE))


@settings(max_examples=300, deadline=None)
@given(st.lists(values, max_size=10))
def test_encode_then_decode_gives_back_every_value(args):
    m = decode_message(encode_message("/groove/ping", args))
    assert len(m.args) == len(args)
    for got, want in zip(m.args, args):
        if isinstance(want, float) and abs(want) <= 3.4028234663852886e38:
            assert got == pytest.approx(want, rel=1e-6) or (math.isinf(got) and abs(want) > 3.4e38)
        else:
            assert got == want and type(got) is type(want)


@settings(max_examples=300, deadline=None)
@given(st.lists(values, max_size=6), st.integers(1, 64))
def test_a_message_cut_anywhere_or_with_bytes_appended_is_refused(args, cut):
    dgram = encode_message("/groove/ping", args)
    with pytest.raises(WireError):
        decode_message(dgram[:max(0, len(dgram) - cut)])
    with pytest.raises(WireError):
        decode_message(dgram + b"\x00" * cut)


def test_a_message_with_more_arguments_than_any_request_takes_is_refused_before_reading():
    dgram = b"/groove/ping\x00\x00\x00\x00" + b"," + b"N" * 60_000 + b"\x00" * 3
    with pytest.raises(WireError, match="more than 256 arguments"):
        decode_message(dgram)
    assert len(decode_message(encode_message("/groove/ping", [None] * 256)).args) == 256
