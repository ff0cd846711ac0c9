"""The live server with a MusicVAE drum model (2-bar categorical, 16-bar hierarchical), on the
fake clock: whole phrases on bar boundaries, walks and morphs that move the latent once a
phrase, /groove/info's phrase length, one-line errors for what needs attribute vectors, and
serve --humanize playing every phrase through a humanize model ahead of the bar that needs it."""
from __future__ import annotations

import numpy as np
import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import build_msg

from groove_live.transforms import FIXED_VELOCITY

from .conftest import offline_server
from .fake_musicvae import (HUMANIZED_OFFSET, HUMANIZED_VELOCITY, FakeHumanizer, FakeMusicVAE,
                            musicvae_spec)

SENDER = ("127.0.0.1", 57121)
BPM = 240.0  # one bar a second


def reply(server, address: str, *args) -> tuple[str, list]:
    raw, = server.api.handle(build_msg(address, list(args)).dgram, SENDER)
    msg = OscMessage(raw)
    return msg.address, list(msg.params)


def ask(server, address: str, *args) -> list:
    kind, params = reply(server, address, *args)
    assert kind == "/groove/ack", params
    return params[1:]


def info(server) -> dict:
    flat = ask(server, "/groove/info")
    return dict(zip(flat[::2], flat[1::2]))


def bars_played(server) -> dict[int, object]:
    return {bar: content for bar, _, _, content in server.scheduler.committed}


def zs(server) -> dict[int, bytes]:
    return {b: np.asarray(c.z, np.float32).tobytes() for b, c in bars_played(server).items()}


def phrase(bars: int = 16, **config):
    spec = musicvae_spec("hierarchical" if bars == 16 else "categorical", bars)
    engine = FakeMusicVAE(spec)
    server, clock, rec = offline_server(engine, bpm=BPM, **config)
    return server, clock, rec, engine


def test_a_16_bar_phrase_plays_whole_from_one_decode_on_bar_boundaries():
    server, clock, rec, engine = phrase(16)
    server.run_until(clock.now() + 33.5)
    played = bars_played(server)
    assert [played[b].phrase_bar for b in range(33)] == [b % 16 for b in range(33)]
    assert len({zs(server)[b] for b in range(33)}) == 1  # one groove, looped
    # The phrase was decoded once, its bars taken from it (the other decode is the spare
    # groove, decoded ahead for a /groove/sample).
    assert len(engine.calls) == 2
    # Every bar plays the bar of the phrase it stands for, quantized.
    want = engine.decode(np.asarray(played[0].z)[None])
    for b in (0, 5, 15, 16, 31):
        step_hits = {(h.step, h.drum) for h in played[b].hits}
        lo = (b % 16) * 16
        assert step_hits == {tuple(x) for x in np.argwhere(want.hits[0, lo:lo + 16] > 0)}
        assert all(h.velocity == pytest.approx(FIXED_VELOCITY) and h.offset == 0
                   for h in played[b].hits)
    assert server.stats.summary()["missed_bars"] == 0


def test_info_reports_the_kind_and_the_phrase_length():
    server, clock, rec, engine = phrase(16)
    got = info(server)
    assert got["kind"] == "hierarchical"
    assert got["phrase_bars"] == 16 and got["latent_every_bars"] == 16
    assert got["humanize_model"] == ""
    server2, *_ = phrase(2)
    got2 = info(server2)
    assert (got2["kind"], got2["phrase_bars"], got2["latent_every_bars"]) == ("categorical", 2, 2)


def test_a_walk_moves_the_latent_once_a_phrase_and_each_move_starts_a_phrase():
    server, clock, rec, engine = phrase(2)
    server.run_until(clock.now() + 2.5)
    assert ask(server, "/groove/walk", 0.3, 1, 5)[:2] == [pytest.approx(0.3), 2]  # rounded up
    server.run_until(clock.now() + 12.0)
    played = bars_played(server)
    z = zs(server)
    moves = [b for b in sorted(played)[1:] if z[b] != z[b - 1]]
    assert len(moves) >= 4
    assert all(played[b].phrase_bar == 0 for b in moves)  # every new latent starts its phrase
    assert all(b2 - b1 == 2 for b1, b2 in zip(moves, moves[1:]))  # one move a phrase


def test_an_interpolation_steps_once_a_phrase_and_ends_on_the_target():
    server, clock, rec, engine = phrase(2)
    server.run_until(clock.now() + 2.5)
    bars, _, seed = ask(server, "/groove/interpolate", 5, 1.0, 11)
    assert bars == 6  # three 2-bar phrases
    server.run_until(clock.now() + 12.0)
    played = bars_played(server)
    z = zs(server)
    moves = [b for b in sorted(played)[1:] if z[b] != z[b - 1]]
    assert len(moves) == 3 and moves[1] - moves[0] == 2 and moves[2] - moves[1] == 2
    assert all(played[b].phrase_bar == 0 for b in moves)
    target = server.worker.seed_latent(seed)
    np.testing.assert_allclose(played[moves[-1]].z, target, atol=1e-5)
    assert played[moves[-1] + 4].source == "sample"


def test_a_sample_starts_its_phrase_on_the_next_bar():
    server, clock, rec, engine = phrase(16)
    server.run_until(clock.now() + 3.5)
    ask(server, "/groove/sample", 1.0, 123)
    server.run_until(clock.now() + 4.0)
    played = bars_played(server)
    new = [b for b in sorted(played) if np.array_equal(played[b].z,
                                                       server.worker.seed_latent(123))]
    assert new and [played[b].phrase_bar for b in new] == list(range(len(new)))


@pytest.mark.parametrize("address,args", [("/groove/style", ["funk"]),
                                          ("/groove/density", [0.5]),
                                          ("/groove/syncopation", [-0.5]),
                                          ("/groove/fill", [])])
def test_steering_needs_attribute_vectors_and_says_so_in_one_error(address, args):
    server, clock, rec, engine = phrase(16)
    before = len(engine.calls)
    kind, params = reply(server, address, *args)
    assert kind == "/groove/error" and params[0] == address
    assert "attribute vectors" in params[1] and "\n" not in params[1]
    server.run_until(clock.now() + 3.0)
    assert server.stats.summary()["missed_bars"] == 0 and len(engine.calls) == before


def test_humanize_plays_every_phrase_window_by_window_on_the_worker():
    humanizer = FakeHumanizer()
    spec = musicvae_spec("hierarchical", 16)
    engine = FakeMusicVAE(spec)
    from groove_live.live.clock import FakeClock
    from groove_live.live.server import ServeConfig, Server
    from groove_live.live.sinks import RecordingSink

    clock = FakeClock()
    server = Server(engine, ServeConfig(port=None, bpm=BPM, seed=7), clock=clock,
                    sinks=[RecordingSink(clock.now)], humanizer=humanizer)
    server.start(threaded=False)
    server.run_until(clock.now() + 20.5)
    played = bars_played(server)
    quantized = engine.decode(np.asarray(played[0].z)[None])
    for b in range(20):
        lo = (b % 16) * 16
        assert {(h.step, h.drum) for h in played[b].hits} == \
            {tuple(x) for x in np.argwhere(quantized.hits[0, lo:lo + 16] > 0)}
        assert all(h.velocity == pytest.approx(HUMANIZED_VELOCITY)
                   and h.offset == pytest.approx(HUMANIZED_OFFSET) for h in played[b].hits)
    # One pass per decoded phrase: its non-silent 2-bar windows in one batch, one drummer.
    active = int(quantized.hits.reshape(8, -1).any(axis=1).sum())
    assert humanizer.batches[0] == active  # the first pass is the first phrase's (prime)
    feel = humanizer.feels[0]
    assert np.all(feel == feel[0])
    got = info(server)
    assert got["humanize_model"] == "fake_humanize" and got["humanize_max_ms"] >= 0


def test_the_next_16_bar_phrase_is_decoded_and_humanized_bars_ahead_of_its_first_bar():
    """The worker plans ahead_bars past the bar the clock took: the decode and humanize pass
    of a new 16-bar phrase (a walk moves the latent at bar 16) is ready over a bar before its
    first bar is needed, so a decode shorter than a bar never makes that bar late."""
    humanizer = FakeHumanizer()
    engine = FakeMusicVAE(musicvae_spec("hierarchical", 16))
    from groove_live.live.clock import FakeClock
    from groove_live.live.server import ServeConfig, Server
    from groove_live.live.sinks import RecordingSink

    clock = FakeClock()
    server = Server(engine, ServeConfig(port=None, bpm=BPM, seed=7, ahead_bars=2,
                                        quantize="phrase"),
                    clock=clock, sinks=[RecordingSink(clock.now)], humanizer=humanizer)
    server.start(threaded=False)
    server.run_until(clock.now() + 1.5)
    ask(server, "/groove/walk", 0.5, 16, 3)  # lands on bar 16, the next phrase
    server.run_until(clock.now() + 40.0)
    played = bars_played(server)
    z = zs(server)
    assert z[16] != z[15] and z[32] != z[31] and played[16].phrase_bar == 0
    bar_s = 60.0 / BPM * 4
    for b in (16, 32):
        t_bar = next(t for bar, t, _, _ in server.scheduler.committed if bar == b)
        assert played[b].ready_t_s <= t_bar - bar_s  # over a bar of headroom
        assert not played[b].requested
    summary = server.stats.summary()
    assert summary["missed_bars"] == 0 and summary["min_ready_bars"] >= 1.0
    assert len(engine.calls) >= 3 and len(humanizer.batches) == len(engine.calls)


def test_a_new_temperature_starts_its_phrase_rather_than_jumping_into_one():
    server, clock, rec, engine = phrase(16)
    server.run_until(clock.now() + 5.5)
    ask(server, "/groove/temperature", 0.4)
    server.run_until(clock.now() + 4.0)
    played = bars_played(server)
    assert any(t == pytest.approx(0.4) for _, _, t in engine.calls)
    restarts = [b for b in sorted(played) if played[b].phrase_bar == 0 and b > 0]
    assert restarts and restarts[0] < 16  # at the new temperature, not at bar 16
    first = restarts[0]
    assert [played[b].phrase_bar for b in range(first, max(played) + 1)] == \
        list(range(max(played) + 1 - first))


@pytest.mark.parametrize("name,bars", [("toy_cat_drums_2bar", 2),
                                       ("toy_hierdec_drums_16bar", 16)])
def test_the_toy_exports_play_humanized_phrases_of_their_length(toy_task_model_path, name,
                                                                bars):
    from pathlib import Path

    from groove_live.engine import Engine

    model = Path(__file__).parents[1] / "fixtures" / f"{name}.onnx"
    if not model.is_file():
        pytest.skip(f"{model.name} is not committed yet")
    from groove_live.live.clock import FakeClock
    from groove_live.live.server import ServeConfig, Server
    from groove_live.live.sinks import RecordingSink

    engine = Engine.load(model)
    humanizer = Engine.load(toy_task_model_path("humanize"))
    clock = FakeClock()
    server = Server(engine, ServeConfig(port=None, bpm=BPM, seed=3, temperature=1.0),
                    clock=clock, sinks=[RecordingSink(clock.now)], humanizer=humanizer)
    server.start(threaded=False)
    assert ask(server, "/groove/walk", 0.5, 1, 9)[1] == bars
    server.run_until(clock.now() + 2 * bars + 2.5)
    played = bars_played(server)
    assert [played[b].phrase_bar for b in sorted(played)][:2 * bars] == list(range(bars)) * 2
    z = zs(server)
    assert z[bars] != z[bars - 1] and z[bars] == z[2 * bars - 1]  # one move a phrase
    hits = [h for c in played.values() for h in c.hits]
    assert hits and len({round(h.velocity, 3) for h in hits}) > 1  # played, not quantized
    assert any(abs(h.offset) > 1e-3 for h in hits)
    got = info(server)
    assert got["kind"] == engine.spec.kind and got["phrase_bars"] == bars
    assert got["humanize_model"] == humanizer.spec.model_name
    assert got["decode_errors"] == 0 and got["missed_bars"] == 0


@pytest.mark.parametrize("humanize,why", [
    ("drumify", "a drumify model, not a humanize model"),
    ("model", "a groovae model, not a humanize model")])
def test_serve_humanize_with_a_model_that_cannot_humanize_is_one_line(procs, humanize, why,
                                                                       toy_task_model_path):
    from .procs import FAKE, TOY_MODEL, free_udp_port, serve_argv

    if FAKE:
        pytest.skip("needs the real serve command")
    path = TOY_MODEL if humanize == "model" else toy_task_model_path(humanize)
    p = procs(serve_argv("--port", str(free_udp_port()), "--humanize", str(path)))
    assert p.wait_exit(timeout_s=30) == 2
    err = [line for line in p.text("err").splitlines() if line.strip()]
    assert len(err) == 1, p.text()
    assert err[0].startswith("groove-live: error: --humanize: ") and why in err[0]


def test_a_task_result_starts_on_the_next_bar_not_up_to_16_bars_later():
    from groove_live.live.clock import FakeClock
    from groove_live.live.server import ServeConfig, Server
    from groove_live.live.sinks import RecordingSink

    humanize = FakeHumanizer()  # Engine.transform's contract: the typed hits, played
    clock = FakeClock()
    server = Server(FakeMusicVAE(musicvae_spec("hierarchical", 16)),
                    ServeConfig(port=None, bpm=BPM, seed=7), clock=clock,
                    sinks=[RecordingSink(clock.now)], task_engines={"humanize": humanize})
    server.start(threaded=False)
    server.run_until(clock.now() + 3.5)
    ask(server, "/groove/humanize", "kick", "x...x...x...x...")
    server.run_until(clock.now() + 6.0)
    played = bars_played(server)
    task_bars = [b for b in sorted(played) if played[b].source == "humanize"]
    assert task_bars and task_bars[0] < 8  # the next free bar, not bar 16
    assert [played[b].phrase_bar for b in task_bars] == [i % 2 for i in range(len(task_bars))]
    assert {(h.step, h.drum) for h in played[task_bars[0]].hits} == {(s, 0) for s in (0, 4, 8, 12)}
