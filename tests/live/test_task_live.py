"""/groove/humanize and /groove/infill in the live server, on the fake clock: what plays, from
which bar, and the one-line errors for bad patterns (the music goes on)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from groove_live.live.clock import FakeClock
from groove_live.live.osc_wire import decode_message, encode_message
from groove_live.live.server import ServeConfig, Server
from groove_live.live.sinks import RecordingSink
from groove_live.live.tasks_live import keep_accents, load_task_engines
from groove_live.pattern import Patterns
from groove_live.spec import TASK_CONTROL, Control, ModelSpec

from .fake_engine import FakeEngine

SENDER = ("127.0.0.1", 57121)
BPM = 240.0  # one bar a second
KICK, SNARE, CLOSED, OPEN = 0, 1, 2, 3


def task_spec(task: str, **kw) -> ModelSpec:
    base = ModelSpec()
    return ModelSpec(kind="conditioned", task=task, bars=2, z_size=8, model_name=task,
                     controls=(Control(TASK_CONTROL, base.step_size),), **kw)


class FakeTaskEngine:
    """Engine.transform's contract with a known answer. humanize: the input's hits, velocity
    falling with the step (so plain hits early in the bar are louder than accents later, unless
    accents are kept), offset +0.1; drumify: a kick on every tapped step and a snare on 4 and 12,
    offset +0.2; infill: the input plus a closed hat on every even step. Records its threads."""

    def __init__(self, task: str, spec: ModelSpec | None = None, fail: bool = False) -> None:
        self.task = task
        self.spec = spec or task_spec(task)
        self.fail = fail
        self.threads: list[str] = []
        self.calls: list[tuple[Patterns, float, int | None]] = []

    def transform(self, patterns, temperature=1.0, seed=None, z=None) -> Patterns:
        self.threads.append(threading.current_thread().name)
        self.calls.append((patterns, temperature, seed))
        if self.fail:
            raise RuntimeError("model exploded")
        spec = self.spec
        assert patterns.hits.shape == (1, spec.steps, spec.n_drums)
        p = patterns.cleaned()
        hits = p.hits.copy()
        if self.task == "drumify":
            tapped = p.hits.max(axis=-1)
            hits = np.zeros_like(hits)
            hits[:, :, KICK] = tapped
            hits[:, 4::16, SNARE] = hits[:, 12::16, SNARE] = 1.0
            offsets = 0.2 * hits
        elif self.task == "infill":
            hits[:, :, CLOSED] = 0.0
            hits[:, ::2, CLOSED] = 1.0
            hits[:, :, OPEN] = 0.0
            offsets = p.offsets.copy()
            offsets[:, :, CLOSED] = 0.05 * hits[:, :, CLOSED]
        else:
            offsets = 0.1 * hits
        falling = np.linspace(0.95, 0.2, spec.steps, dtype=np.float32)[None, :, None]
        velocities = hits * falling
        if self.task == "infill":  # kept voices keep the input's velocities
            keep = np.ones(spec.n_drums, bool)
            keep[[CLOSED, OPEN]] = False
            velocities[:, :, keep] = p.velocities[:, :, keep]
        return Patterns(hits, velocities, offsets)


def task_engines(**kw) -> dict:
    return {t: FakeTaskEngine(t, **kw) for t in ("humanize", "drumify", "infill")}


def offline(engines=None, **config):
    clock = FakeClock()
    recording = RecordingSink(clock.now)
    config.setdefault("seed", 7)
    config.setdefault("bpm", BPM)
    config.setdefault("bar_lookahead_s", 0.1)
    server = Server(FakeEngine(), ServeConfig(port=None, **config), clock=clock,
                    sinks=[recording], task_engines=task_engines() if engines is None else engines)
    server.start(threaded=False)
    return server, clock, recording


def send(server, address, *args):
    """One request through the server's datagram path; its one reply as (address, args)."""
    replies = server.handle_datagram(encode_message(address, list(args)), SENDER)
    assert len(replies) == 1
    m = decode_message(replies[0])
    return m.address, list(m.args)


def committed(server) -> dict:
    return {bar: content for bar, _, _, content in server.scheduler.committed}


def played_bar(server, bar):
    return committed(server)[bar]


BEAT = ("kick", "X...x...X...x...", "snare", "....x.......X...", "closed_hihat", "x.x.x.x.x.x.x.x.")


def test_humanize_loops_the_result_from_the_next_phrase_start_and_never_before():
    server, clock, recording = offline()
    spec = server.spec  # the sampling model: 4-bar phrases
    server.run_until(clock.now() + 1.3)  # in bar 1
    first_free = server.timeline.first_free_bar()
    assert 0 < first_free < spec.bars
    assert send(server, "/groove/humanize", *BEAT) == ("/groove/ack", ["/groove/humanize", (4 + 2 + 8) * 2])
    server.run_until(clock.now() + 8.0)
    bars = committed(server)
    engine = server.tasks.engines["humanize"]
    assert len(engine.calls) == 1
    # Before the phrase start: the sampled groove; from it on: the 2-bar result, repeated.
    assert all(bars[b].source == "sample" for b in range(first_free, spec.bars))
    assert [bars[b].source for b in range(spec.bars, spec.bars + 6)] == ["humanize"] * 6
    assert [bars[b].phrase_bar for b in range(spec.bars, spec.bars + 6)] == [0, 1, 0, 1, 0, 1]
    assert bars[spec.bars].hits == bars[spec.bars + 2].hits
    # What plays is the transform's output: the typed hits, its timing.
    kick_steps = sorted(h.step for h in bars[spec.bars].hits if h.drum == KICK)
    assert kick_steps == [0, 4, 8, 12]
    assert all(abs(h.offset - 0.1) < 1e-6 for h in bars[spec.bars].hits)
    # ...and those are the hits the sinks got, at the downbeat of the phrase's first bar + offset.
    t_bar = server.scheduler.bar_t_s(spec.bars)
    step_s = 1.0 / 16
    kicks = [e for e in recording.hits() if e.bar == spec.bars and e.voice == "kick"]
    assert [round((e.t_s - t_bar) / step_s, 6) for e in kicks] == [0.1, 4.1, 8.1, 12.1]


def test_humanize_keeps_accents_louder_than_plain_hits_of_the_same_voice():
    server, clock, _ = offline()
    assert send(server, "/groove/humanize", *BEAT)[0] == "/groove/ack"
    server.run_until(clock.now() + 10.0)
    content = played_bar(server, 4)
    kick = {h.step: h.velocity for h in content.hits if h.drum == KICK}
    snare = {h.step: h.velocity for h in content.hits if h.drum == SNARE}
    # The fake model plays step 4 louder than step 8; written accents are on 0 and 8 (X).
    assert min(kick[0], kick[8]) > max(kick[4], kick[12])
    assert snare[12] > snare[4]
    # A voice written at one level keeps the model's dynamics (falling through the bar).
    hats = [v for s, v in sorted((h.step, h.velocity) for h in content.hits if h.drum == CLOSED)]
    assert hats == sorted(hats, reverse=True) and hats[0] > hats[-1]


def test_keep_accents_never_crosses_levels_whatever_the_model_says():
    spec = task_spec("humanize")
    rng = np.random.default_rng(0)
    for _ in range(50):
        written = np.zeros((1, spec.steps, spec.n_drums), np.float32)
        written[0, :, 0] = rng.choice([0.0, 0.3, 0.6, 0.9], spec.steps)
        hits = (written > 0).astype(np.float32)
        played = Patterns(hits, hits * rng.uniform(0.01, 1.0, written.shape).astype(np.float32),
                          np.zeros_like(hits))
        out = keep_accents(Patterns(hits, written, np.zeros_like(hits)), played)
        v, w = out.velocities[0, :, 0], written[0, :, 0]
        levels = [lvl for lvl in (0.3, 0.6, 0.9) if (w == lvl).any()]
        for lo, hi in zip(levels, levels[1:]):
            assert v[w == lo].max() < v[w == hi].min()
        assert ((v > 0) == (w > 0)).all() and v.max() <= 1.0


def test_infill_plays_the_pattern_plus_the_models_hats():
    server, clock, _ = offline()
    reply = send(server, "/groove/infill", 0.5, "kick", "x...x...x...x...", "snare", "....X.......X...")
    assert reply == ("/groove/ack", ["/groove/infill", 8 + 4, 0.5])
    server.run_until(clock.now() + 10.0)
    content = played_bar(server, 4)
    assert content.source == "infill"
    by_drum = {}
    for h in content.hits:
        by_drum.setdefault(h.drum, []).append(h)
    assert sorted(h.step for h in by_drum[KICK]) == [0, 4, 8, 12]
    assert all(h.offset == 0 for h in by_drum[KICK])  # kept as typed
    assert [h.velocity for h in by_drum[SNARE]] == pytest.approx([0.9, 0.9])
    assert sorted(h.step for h in by_drum[CLOSED]) == list(range(0, 16, 2))
    assert server.tasks.engines["infill"].calls[0][1] == 0.5


@pytest.mark.parametrize("args, reason", [
    ((), "no voices given"),
    (("kick",), "odd number"),
    (("cowbell", "x..."), "unknown voice 'cowbell'"),
    (("kick", "x...x...x...x.."), "15 steps do not divide"),
    (("kick", "x" * 48), "48 steps do not divide"),
    (("kick", "x..q"), "step 4 is 'q'"),
    (("kick", "...."), "no hits"),
    (("kick", ""), "empty step string"),
    (("kick", "x...", "kick", "x..."), "given twice"),
    (("kick", 3), "must be strings"),
    ((7.0, "kick", "x..."), "temperature must be in [0, 5]"),
])
def test_a_bad_pattern_gets_one_error_naming_the_problem_and_the_music_goes_on(args, reason):
    server, clock, recording = offline()
    server.run_until(clock.now() + 1.5)
    address, reply = send(server, "/groove/humanize", *args)
    assert address == "/groove/error" and reply[0] == "/groove/humanize"
    assert reason in reply[1], reply[1]
    n = len(recording.hits())
    server.run_until(clock.now() + 6.0)
    assert len(recording.hits()) > n
    assert {c.source for c in committed(server).values()} == {"sample"}
    assert server.tasks.engines["humanize"].calls == []


def test_infill_refuses_hats_and_too_many_arguments():
    server, _, _ = offline()
    address, reply = send(server, "/groove/infill", "kick", "x...", "closed_hihat", "x.x.")
    assert address == "/groove/error" and "leave out closed_hihat" in reply[1]
    address, reply = send(server, "/groove/humanize", *(["kick", "x..."] * 10))
    assert address == "/groove/error" and "at most 19 arguments" in reply[1]


def test_a_missing_task_model_is_an_error_for_that_address_only():
    engines = task_engines()
    engines["humanize"] = "no humanize model is bundled with this install (pass --humanize-model)"
    server, clock, _ = offline(engines)
    address, reply = send(server, "/groove/humanize", *BEAT)
    assert (address, reply) == ("/groove/error", ["/groove/humanize", engines["humanize"]])
    assert send(server, "/groove/infill", "kick", "x...")[0] == "/groove/ack"
    info = dict(zip(*[iter(send(server, "/groove/info")[1][1:])] * 2))
    assert info["tasks"] == "drumify,infill"


def test_a_failing_task_model_leaves_the_music_as_it_was():
    server, clock, _ = offline({"humanize": FakeTaskEngine("humanize", fail=True)})
    assert send(server, "/groove/humanize", *BEAT)[0] == "/groove/ack"
    server.run_until(clock.now() + 8.0)
    assert {c.source for c in committed(server).values()} == {"sample"}
    assert server.worker.decode_errors == 1 and "model exploded" in server.worker.last_error


def test_a_sample_after_a_task_result_replaces_it_and_a_walk_goes_on_from_the_groove():
    server, clock, _ = offline()
    send(server, "/groove/humanize", *BEAT)
    server.run_until(clock.now() + 6.0)
    assert played_bar(server, 4).source == "humanize"
    send(server, "/groove/walk", 0.2, 1)
    server.run_until(clock.now() + 3.0)
    last = max(committed(server))
    assert committed(server)[last].source == "walk"


def test_load_task_engines_turns_off_what_it_cannot_use():
    spec = ModelSpec()

    def load(task, source):
        if source == "h.onnx":
            return FakeTaskEngine("humanize")
        if source == "d.onnx":
            return FakeTaskEngine("infill")  # the wrong task
        raise RuntimeError(f"{source}: no such model file")
    engines = load_task_engines(spec, {"humanize": "h.onnx", "drumify": "d.onnx",
                                       "infill": "none"}, load)
    assert isinstance(engines["humanize"], FakeTaskEngine)
    assert engines["drumify"] == "the drumify model is an infill model"
    assert "turned off" in engines["infill"]
    other = ModelSpec(drums=ModelSpec().drums[:3])
    engines = load_task_engines(other, {"humanize": "h.onnx"}, load)
    assert "voices" in engines["humanize"]
    assert engines["infill"] == "no infill model: None: no such model file"


def test_the_toy_task_models_serve_in_the_live_server(toy_task_model_path):
    from groove_live.engine import Engine

    engines = {t: Engine.load(toy_task_model_path(t)) for t in ("humanize", "drumify", "infill")}
    server, clock, _ = offline(engines)
    assert server.tasks.info()[0] == ("tasks", "humanize,drumify,infill")
    assert send(server, "/groove/humanize", *BEAT)[0] == "/groove/ack"
    server.run_until(clock.now() + 6.0)
    content = played_bar(server, 4)
    assert content.source == "humanize"
    # Humanize keeps the typed hits exactly (the model's contract); accents stay on top.
    assert sorted(h.step for h in content.hits if h.drum == KICK) == [0, 4, 8, 12]
    kick = {h.step: h.velocity for h in content.hits if h.drum == KICK}
    assert min(kick[0], kick[8]) > max(kick[4], kick[12])
    assert send(server, "/groove/infill", "kick", "x...x...", "snare", "....x...")[0] == "/groove/ack"
    server.run_until(clock.now() + 4.0)
    content = played_bar(server, 8)
    assert content.source == "infill"
    assert sorted(h.step for h in content.hits if h.drum == KICK) == [0, 4, 8, 12]


def test_a_result_that_misses_its_phrase_start_waits_for_the_next_never_starting_late():
    engine = FakeTaskEngine("humanize")
    server, clock, _ = offline({"humanize": engine})
    server.run_until(clock.now() + 1.3)
    transform = engine.transform

    def slow_transform(*args, **kw):
        # The inference outlasts the bar: the clock commits bar 4, the phrase start, meanwhile.
        clock.advance_to(server.scheduler.bar_t_s(4) + 0.01)
        server.scheduler.process(clock.now())
        return transform(*args, **kw)
    engine.transform = slow_transform
    assert send(server, "/groove/humanize", *BEAT)[0] == "/groove/ack"
    server.run_until(clock.now() + 8.0)
    bars = committed(server)
    assert [bars[b].source for b in range(4, 9)] == ["sample"] * 4 + ["humanize"]
    assert bars[8].phrase_bar == 0 and not any(c.source == "silence" for c in bars.values())
