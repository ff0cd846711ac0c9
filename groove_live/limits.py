"""Limits several modules share, stated once: the CLI, the OSC API, the worker and the outputs
all check or use the same ranges, and a range that differs between them is a bug.

Plain constants only (no imports), so any module, runtime or training side, can use them.
"""
from __future__ import annotations

# Seeds travel as OSC int32 and numpy takes them as is: 0 <= seed < SEED_LIMIT.
SEED_LIMIT = 2**31

# Tempo of the live server. The bar grid, the MIDI clock and the /groove/bar lookahead cap
# (under a bar: 500 ms fits up to MAX_BPM) are sized for this range.
MIN_BPM = 20.0
MAX_BPM = 400.0

# Sampling temperature: 0 plays the most likely pattern; above 5 a model plays noise.
MIN_TEMPERATURE = 0.0
MAX_TEMPERATURE = 5.0
# One default for every command, offline and live. Temperature scales every sampled part (hit
# logits, velocity and timing noise; for a task model its feel latent too), so 1 samples the
# distribution the model learned from drummers: at 1 the bundled model's hits per bar and
# velocity/timing spread are closest to the Groove MIDI Dataset's (docs/osc.md, "Temperature").
DEFAULT_TEMPERATURE = 1.0

# Where a change of groove lands in the live server: the next bar or the next phrase start.
QUANTIZE_MODES = ("bar", "phrase")

# General MIDI drums are on channel 10: 9 counted from zero, as MIDI libraries count.
DRUM_CHANNEL = 9
# How long a drum note lasts, in grid steps, live and in MIDI files: drums only care about
# onsets, and short notes keep a DAW's piano roll readable.
NOTE_LENGTH_STEPS = 0.5

# Uniform noise fed to a decoder is kept inside (0, 1): logit(0) would be -inf, and 0 * -inf
# (temperature 0) NaN.
NOISE_EPS = 2.0 ** -24

# How early /groove/bar may be asked to go out before its downbeat.
MAX_BAR_LOOKAHEAD_MS = 2000.0
