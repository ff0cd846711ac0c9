"""The address policy on its own: parsing, allow-list, self, broadcast/multicast, rate limits,
target expiry. Kernel probes are faked and every call takes the time, so all asserts are exact."""
from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from groove_live.live.guard import AddressRefused, Guard, Limits, parse_host, parse_network

OWN = ("127.0.0.1", 57120)
LAN = IPv4Network("192.168.1.0/24")
LOCAL = {"127.0.0.1", "192.168.1.5"}  # what the fake kernel says is this machine's
BROADCASTS = {"192.168.1.255", "255.255.255.255", "127.255.255.255"}


def fake_route(host: str, port: int) -> str:
    if host in BROADCASTS:
        return "broadcast"
    if host.startswith("10.99."):
        return "no route to " + host + " (Network is unreachable)"
    return "unicast"


def guard(allow=(), own=OWN, limits=Limits()) -> Guard:
    return Guard(allow, own, limits, is_local=LOCAL.__contains__, route=fake_route)


@pytest.mark.parametrize("text,want", [
    ("127.0.0.1", "127.0.0.1"), ("localhost", "127.0.0.1"), ("10.0.0.255", "10.0.0.255"),
])
def test_hosts_parse_to_canonical_numbers(text, want):
    assert parse_host(text) == want


@pytest.mark.parametrize("text", [
    "\u0661\u0662\u0667.0.0.1",  # Arabic-Indic digits: str.isdigit() is true for them
    "\u00b927.0.0.1", "\uff11\uff12\uff17.0.0.1",  # superscript, fullwidth
    "127.000.0.1", "127.0.0.1 ", " 127.0.0.1", "127.0.0", "127.0.0.1.5", "256.0.0.1",
    "example.com", "LOCALHOST", "", "0x7f.0.0.1", "127.0.0.1/32", "::1", 127, None,
])
def test_anything_but_a_canonical_ipv4_address_is_refused(text):
    with pytest.raises(AddressRefused):
        parse_host(text)


def test_networks_for_allow():
    assert parse_network("192.168.1.0/24") == LAN
    assert parse_network("192.168.1.7") == IPv4Network("192.168.1.7/32")
    with pytest.raises(AddressRefused, match="did you mean 192.168.1.0/24"):
        parse_network("192.168.1.7/24")
    for bad in ("192.168.1.0/33", "lan", "\u0661.0.0.0/8", "fe80::/10", "", "10.0.0.0/"):
        with pytest.raises(AddressRefused):
            parse_network(bad)


def test_sources_loopback_and_allowed_only_never_self_or_unanswerable():
    g = guard([LAN])
    assert g.source_refused(("127.0.0.1", 57121)) is None
    assert g.source_refused(("127.3.4.5", 57120)) is None  # loopback, but not our address
    assert g.source_refused(("192.168.1.20", 4000)) is None
    assert g.source_refused(("192.168.2.20", 4000)) == "not_allowed"
    assert g.source_refused(("8.8.8.8", 53)) == "not_allowed"
    assert g.source_refused(OWN) == "self"
    for bad in (("127.0.0.1", 0), ("0.0.0.0", 9), ("224.0.0.1", 9), ("255.255.255.255", 9),
                ("192.168.1.255", 9)):
        assert g.source_refused(bad) == "bad_source", bad


def test_listening_on_every_address_every_local_address_is_self():
    g = guard([LAN], own=("0.0.0.0", 57120))
    assert g.source_refused(("127.0.0.1", 57120)) == "self"
    assert g.source_refused(("192.168.1.5", 57120)) == "self"
    assert g.source_refused(("192.168.1.6", 57120)) is None  # another machine, same port
    assert g.source_refused(("192.168.1.5", 57121)) is None


def refused(g: Guard, host: str, port: int = 9000) -> str | None:
    try:
        g.check_target(host, port)
    except AddressRefused as e:
        return str(e)
    return None


def test_targets_loopback_by_default_others_only_when_allowed():
    g = guard()
    assert refused(g, "127.0.0.1") is None and refused(g, "127.0.0.2") is None
    assert "not allowed" in refused(g, "192.168.1.20") and "--allow" in refused(g, "8.8.8.8")
    assert "groove-live itself" in refused(g, "127.0.0.1", 57120)
    assert "not a destination" in refused(g, "0.0.0.0")
    g = guard([LAN])
    assert refused(g, "192.168.1.20") is None
    assert "not allowed" in refused(g, "192.168.2.20")


def test_broadcast_and_multicast_only_when_allowed_by_name():
    g = guard([LAN])  # a network holding the broadcast address is not enough
    assert "broadcast" in refused(g, "192.168.1.255")
    assert "broadcast" in refused(g, "255.255.255.255")
    assert "broadcast" in refused(g, "127.255.255.255")  # loopback's broadcast too
    assert "multicast" in refused(g, "239.1.2.3")
    g = guard([LAN, IPv4Network("192.168.1.255/32"), IPv4Network("239.1.0.0/16")])
    assert refused(g, "192.168.1.255") is None and refused(g, "239.1.2.3") is None
    assert "multicast" in refused(g, "239.2.0.1")
    assert "broadcast" in refused(g, "255.255.255.255")
    # A unicast network that happens to hold multicast addresses does not opt in to them.
    assert "multicast" in refused(guard([IPv4Network("0.0.0.0/0")]), "224.0.0.251")


def test_unreachable_targets_are_refused_with_the_kernels_reason():
    assert "Network is unreachable" in refused(guard([IPv4Network("10.99.0.0/16")]), "10.99.1.1")


def test_sends_need_no_allow_but_never_self():
    g = guard()
    assert g.check_send("192.168.7.7", 4560) == "unicast"
    assert g.check_send("239.1.2.3", 4560) == "multicast"
    assert g.check_send("192.168.1.255", 4560) == "broadcast"
    with pytest.raises(AddressRefused, match="own address"):
        g.check_send(*OWN)
    with pytest.raises(AddressRefused, match="unreachable"):
        g.check_send("10.99.0.1", 4560)


def test_targets_set_from_the_network_expire_those_from_loopback_do_not():
    g = guard([LAN], limits=Limits(target_ttl_s=30.0))
    assert g.target_expiry_s(("127.0.0.1", 5000), 100.0) is None
    assert g.target_expiry_s(None, 100.0) is None
    assert g.target_expiry_s(("192.168.1.20", 5000), 100.0) == 130.0


LIMITS = Limits(messages_per_s=10.0, message_burst=20.0, bytes_per_s=1000.0, byte_burst=2000.0,
                total_factor=2.0)


def test_network_senders_get_a_burst_then_the_rate():
    g = guard([LAN], limits=LIMITS)
    sender = ("192.168.1.20", 4000)
    assert sum(g.take_message(sender, 0.0) for _ in range(100)) == 20
    assert g.drops["rate_limited"] == 80
    assert sum(g.take_message(sender, 0.5) for _ in range(100)) == 5  # 0.5 s at 10/s
    assert sum(g.take_message(sender, 100.0) for _ in range(100)) == 20  # full again, no more


def test_reply_bytes_are_limited_too_and_a_reply_is_never_cut():
    g = guard([LAN], limits=LIMITS)
    sender = ("192.168.1.20", 4000)
    sent = 0
    for _ in range(20):  # 20 messages allowed, but each reply is 700 bytes
        if g.take_message(sender, 0.0):
            g.charge_reply(sender, 700, 0.0)
            sent += 700
    assert sent == 2100  # the third reply took the bucket into debt; none after it
    assert not g.take_message(sender, 0.09)  # 90 bytes of the 100 owed came back
    assert g.take_message(sender, 0.2)


def test_all_network_senders_together_are_bounded():
    g = guard([LAN], limits=LIMITS)
    took = sum(g.take_message((f"192.168.1.{i}", 4000), 0.0) for i in range(1, 255)
               for _ in range(20))
    assert took == 40  # total_factor 2: two senders' burst, however many senders
    assert sum(g.take_message((f"192.168.1.{i}", 4000), 1.0) for i in range(1, 255)) == 20


def test_loopback_is_not_rate_limited():
    g = guard(limits=LIMITS)
    assert all(g.take_message(("127.0.0.1", 4000), 0.0) for _ in range(1000))
    g.charge_reply(("127.0.0.1", 4000), 10**9, 0.0)
    assert g.take_message(("127.0.0.1", 4000), 0.0)


def test_many_forged_senders_do_not_grow_memory_without_bound():
    g = guard([IPv4Network("10.0.0.0/8")], limits=LIMITS)
    for i in range(5000):
        g.take_message((f"10.0.{i // 256}.{i % 256}", 4000), float(i))
    assert len(g._senders) <= 1024


def test_a_senders_verdict_is_reused_for_its_ttl_and_the_memo_is_bounded():
    from groove_live.live.guard import SOURCE_VERDICT_MAX, SOURCE_VERDICT_TTL_S

    probes = []

    def counting_route(host, port):
        probes.append(host)
        return fake_route(host, port)

    g = Guard([LAN], ("0.0.0.0", 57120), Limits(), is_local=LOCAL.__contains__,
              route=counting_route)
    lan_sender = ("192.168.1.20", 4000)
    assert [g.source_refused(lan_sender, 10.0 + i * 0.001) for i in range(100)] == [None] * 100
    assert len(probes) == 1  # one kernel probe for a flood from one address
    assert g.source_refused(lan_sender, 10.0 + SOURCE_VERDICT_TTL_S) is None
    assert len(probes) == 2  # the verdict is asked again after its TTL
    assert g.source_refused(("192.168.1.255", 4000), 11.0) == "bad_source"  # not cached wrongly
    assert g.source_refused(("192.168.1.255", 4000)) == "bad_source"  # and uncached the same
    for i in range(3 * SOURCE_VERDICT_MAX):  # forged sources cannot grow the memo
        g.source_refused((f"192.168.1.{i % 250 + 1}", 1000 + i), 12.0)
    assert len(g._verdicts) <= SOURCE_VERDICT_MAX
