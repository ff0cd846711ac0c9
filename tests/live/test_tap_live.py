"""/groove/tap on the fake clock: taps placed on the bar grid (less the tap latency), takes of
1 or 2 bars drumified on the worker and played from the next phrase start, with the taps'
micro-timing; no taps or too many get one error and the music goes on."""
from __future__ import annotations

import pytest

from groove_live.live.osc_wire import decode_message
from groove_live.live.tap import TapRecorder, place

from .test_task_live import KICK, SENDER, committed, offline, send

STEP_S = 1.0 / 16  # 240 BPM: a bar a second


def at(server, clock, bar, step, offset=0.0):
    """Run the server up to the moment of (bar, step + offset) on its grid."""
    server.run_until(clock.now())  # a fresh server places its grid when the clock first runs
    server.run_until(server.scheduler.bar_t_s(bar) + (step + offset) * STEP_S)
    assert clock.now() == pytest.approx(server.scheduler.bar_t_s(bar) + (step + offset) * STEP_S)


def later_replies(server) -> list:
    got = []
    server.tasks.send = lambda reply, sender: got.append((decode_message(reply), sender))
    return got


def test_taps_are_placed_on_the_bar_grid_and_their_take_plays_from_the_next_phrase_start():
    server, clock, recording = offline()
    replies = later_replies(server)
    taps = [(1, 0, 0.0), (1, 3, 0.25), (1, 8, -0.2), (2, 4, 0.1), (2, 12, 0.0)]
    for bar, step, offset in taps:
        at(server, clock, bar, step, offset)
        address, args = send(server, "/groove/tap", 0.7)
        assert address == "/groove/ack" and args[:3] == ["/groove/tap", bar, step]
        assert args[3] == pytest.approx(offset, abs=1e-3)
    drumify = server.tasks.engines["drumify"]
    at(server, clock, 2, 15.9)
    assert drumify.calls == []  # the take's last bar has not passed yet
    server.run_until(server.scheduler.bar_t_s(3) + 0.01)
    assert len(drumify.calls) == 1
    assert [(m.address, m.args) for m, _ in replies] == [
        ("/groove/ack", ("/groove/tap/take", 5, 1, 2))]
    taken = drumify.calls[0][0]
    voice = server.spec.drum_names.index("open_hihat")  # the taps' voice
    steps = sorted(int(s) for s in taken.hits[0, :, voice].nonzero()[0])
    assert steps == [0, 3, 8, 16 + 4, 16 + 12]
    assert taken.offsets[0, 3, voice] == pytest.approx(0.25, abs=1e-3)
    server.run_until(clock.now() + 6.0)
    bars = committed(server)
    # The take ended in bar 3; bar 4 starts the next phrase: that is where the kit lands.
    assert [bars[b].source for b in (3, 4, 5, 6)] == ["sample", "drumify", "drumify", "drumify"]
    kicks = sorted((h.step, round(h.offset, 3)) for h in bars[4].hits if h.drum == KICK)
    assert kicks == [(0, 0.0), (3, 0.25), (8, -0.2)]  # the taps' own timing
    kick_t = [round((e.t_s - server.scheduler.bar_t_s(4)) / STEP_S, 3) for e in recording.hits()
              if e.bar == 4 and e.voice == "kick"]
    assert kick_t == [0.0, 3.25, 7.8]


def test_a_take_ending_on_a_phrase_start_waits_for_the_next_one_never_starting_late():
    server, clock, _ = offline()
    at(server, clock, 2, 0)
    send(server, "/groove/tap")
    at(server, clock, 3, 8)
    send(server, "/groove/tap")
    server.run_until(clock.now() + 8.0)
    bars = committed(server)
    first = min(b for b, c in bars.items() if c.source == "drumify")
    assert first == 8 and bars[first].phrase_bar == 0
    assert all(bars[b].source == "sample" for b in range(4, 8))


def test_tap_latency_is_taken_off_the_arrival_time():
    server, clock, _ = offline()
    assert send(server, "/groove/tap/latency", 30.0) == ("/groove/ack", ["/groove/tap/latency", 30.0])
    at(server, clock, 1, 5 + 0.030 / STEP_S)
    address, args = send(server, "/groove/tap")
    assert args[1:3] == [1, 5] and args[3] == pytest.approx(0.0, abs=1e-3)


def test_a_one_bar_take_repeats_to_the_models_two_bars():
    server, clock, _ = offline()
    assert send(server, "/groove/tap/bars", 1) == ("/groove/ack", ["/groove/tap/bars", 1])
    for step in (0, 6, 10):
        at(server, clock, 1, step)
        send(server, "/groove/tap", 0.9)
    server.run_until(server.scheduler.bar_t_s(2) + 0.01)
    taken = server.tasks.engines["drumify"].calls[0][0]
    voice = server.spec.drum_names.index("open_hihat")
    assert sorted(taken.hits[0, :, voice].nonzero()[0]) == [0, 6, 10, 16, 22, 26]


def test_a_tap_past_the_take_ends_it_and_starts_the_next():
    server, clock, _ = offline()
    send(server, "/groove/tap/bars", 1)
    at(server, clock, 1, 4)
    send(server, "/groove/tap")
    assert server.tasks.engines["drumify"].calls == []
    tasks = server.tasks
    tasks.set_tap_latency(5.0)  # taps still count toward bar 1 for a long while...
    at(server, clock, 2, 4)
    tasks.set_tap_latency(0.0)
    send(server, "/groove/tap")  # ...but this one is in bar 2: bar 1's take is done
    server.run_until(clock.now())
    assert len(tasks.engines["drumify"].calls) == 1


def test_too_many_taps_is_one_error_to_the_tapper_and_the_music_goes_on():
    server, clock, recording = offline()
    replies = later_replies(server)
    send(server, "/groove/tap/bars", 1)
    at(server, clock, 1, 0)
    t0 = clock.now()
    for i in range(40):  # 40 taps in 14 steps of a 16-step take
        server.run_until(t0 + i * STEP_S * 0.35)
        assert send(server, "/groove/tap")[0] == "/groove/ack"
    server.run_until(server.scheduler.bar_t_s(2) + 0.01)
    assert [(m.address, m.args[0]) for m, _ in replies] == [("/groove/error", "/groove/tap")]
    assert "too many taps: 40 in 1 bar(s)" in replies[0][0].args[1]
    assert replies[0][1] == SENDER
    assert server.tasks.engines["drumify"].calls == []
    n = len(recording.hits())
    server.run_until(clock.now() + 6.0)
    assert len(recording.hits()) > n
    assert {c.source for c in committed(server).values()} == {"sample"}


def test_ending_a_take_with_no_taps_is_an_error_and_ending_one_early_drumifies_it():
    server, clock, _ = offline()
    address, args = send(server, "/groove/tap/end")
    assert address == "/groove/error" and "no taps to drumify" in args[1]
    at(server, clock, 1, 2)
    send(server, "/groove/tap")
    assert send(server, "/groove/tap/end") == ("/groove/ack", ["/groove/tap/end", 1])
    server.run_until(clock.now() + 0.01)
    assert len(server.tasks.engines["drumify"].calls) == 1


@pytest.mark.parametrize("address, args, reason", [
    ("/groove/tap", [0.0], "velocity must be in (0, 1]"),
    ("/groove/tap", ["loud"], "velocity must be a number"),
    ("/groove/tap/bars", [3], "bars must be in [1, 2]"),
    ("/groove/tap/bars", [], "needs <bars"),
    ("/groove/tap/latency", [-1.0], "latency_ms must be in [0, 1000]"),
])
def test_bad_tap_arguments(address, args, reason):
    server, _, _ = offline()
    got_address, got = send(server, address, *args)
    assert got_address == "/groove/error" and reason in got[1], got


def test_taps_while_stopped_or_without_a_drumify_model_are_refused():
    server, clock, _ = offline()
    send(server, "/groove/stop")
    server.run_until(clock.now() + 0.5)
    address, args = send(server, "/groove/tap")
    assert address == "/groove/error" and "not playing" in args[1]
    server, _, _ = offline({"drumify": "the drumify model is turned off (--drumify-model none)"})
    assert send(server, "/groove/tap") == ("/groove/error", [
        "/groove/tap", "the drumify model is turned off (--drumify-model none)"])


class Grid:
    playing = True
    bar_length_s = 2.0

    def bar_t_s(self, bar):
        return 10.0 + 2.0 * bar

    def current_bar(self, t):
        return int((t - 10.0) // 2.0)


def test_place_rounds_to_the_nearest_step_and_wraps_into_the_next_bar():
    grid, step_s = Grid(), 2.0 / 16
    assert place(10.0 + 3 * step_s + 0.4 * step_s, grid, 16) == (0, 3, pytest.approx(0.4))
    assert place(10.0 + 3 * step_s + 0.6 * step_s, grid, 16) == (0, 4, pytest.approx(-0.4))
    assert place(12.0 - 0.1 * step_s, grid, 16) == (1, 0, pytest.approx(-0.1))
    rec = TapRecorder(16, bars=2, latency_s=0.5)
    rec.add(12.6, 0.5, grid)  # heard at 12.1: bar 1
    assert rec.take.start_bar == 1
    assert rec.due(16.4, grid) is None  # bar 3 starts at 16.0, + latency
    assert rec.due(16.5, grid).taps[0].bar == 1
