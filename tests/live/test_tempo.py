"""Tempo and grid arithmetic (pure functions)."""
from groove_live.live import tempo


def test_bar_and_step_lengths():
    assert tempo.bar_s(120, 4) == 2.0
    assert tempo.step_s(120, 4, 16) == 0.125
    assert tempo.beat_s(60) == 1.0


def test_grid_is_a_product_not_a_sum():
    bar_length_s = tempo.bar_s(174, 4)
    summed = 10.0
    for _ in range(100_000):
        summed += bar_length_s
    exact = tempo.bar_start_s(10.0, 0, 100_000, bar_length_s)
    assert exact == 10.0 + 100_000 * bar_length_s
    assert summed != exact  # what summing sleeps would have drifted to


def test_hit_time_early_note_falls_before_the_downbeat():
    assert tempo.hit_t_s(10.0, 0, -0.25, 0.125) == 10.0 - 0.03125
    assert tempo.hit_t_s(10.0, 4, 0.5, 0.125, timing_amount=0.0) == 10.5


def test_nearest_boundary_and_midi_clock():
    assert tempo.nearest_boundary(10.4, 10.0, 2.0) == 0
    assert tempo.nearest_boundary(11.2, 10.0, 2.0) == 1
    ticks = tempo.midi_clock_times_s(0.0, 2.0, 4)
    assert len(ticks) == 96 and ticks[24] == 0.5


def test_valid_bpm():
    assert tempo.valid_bpm(120)
    assert not tempo.valid_bpm(float("nan"))
    assert not tempo.valid_bpm(1e9)
    assert not tempo.valid_bpm(5)
