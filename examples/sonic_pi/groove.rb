# groove-live -> Sonic Pi: a live_loop that plays every bar groove-live sends.
#
# 1. Start groove-live, sending to Sonic Pi's incoming-OSC (cue) port 4560:
#        groove-live serve --send 127.0.0.1:4560
#    Each /groove/bar then arrives 0.5 s before its downbeat (--bar-lookahead-ms 500,
#    which is Sonic Pi's default sched_ahead_time) carrying every hit of that bar.
# 2. In Sonic Pi's Preferences > IO, allow incoming OSC. Paste this into a buffer, press Run.
# 3. Steer groove-live from any buffer (or from here), for example:
#        osc "/groove/walk", 0.1, 1        # wander through the latent space, a little each bar
#        osc "/groove/interpolate", 8      # morph to a new groove over 8 bars
#        osc "/groove/tempo", 96           # from the next bar on
#        osc "/groove/tempo", 140, 8       # ramp there over 8 bars, bar by bar
#        osc "/groove/sample", 1.0, 1234   # the ack of a /groove/sample names its seed: recall it
#        osc "/groove/mute", "ride", 1
#    Keep Sonic Pi's own bpm at its default (60) in this loop: hit times are in seconds.

use_osc "127.0.0.1", 57120
osc "/groove/sample"

groove_samples = {
  "kick" => :bd_haus, "snare" => :sn_dolf,
  "closed_hihat" => :drum_cymbal_closed, "open_hihat" => :drum_cymbal_open,
  "low_tom" => :drum_tom_lo_hard, "mid_tom" => :drum_tom_mid_hard,
  "high_tom" => :drum_tom_hi_hard, "crash" => :drum_splash_hard, "ride" => :drum_cymbal_soft
}

live_loop :groove do
  bar, bpm, *hits = sync "/osc*/groove/bar"
  # Five values per hit: voice, GM pitch, velocity 0..1, step, seconds after the downbeat
  # (negative for notes the drummer plays early). The cue came 0.5 s before the downbeat and
  # Sonic Pi plays 0.5 s (sched_ahead_time) after a cue: the two cancel, so each hit lands
  # on groove-live's grid plus the model's micro-timing.
  hits.each_slice(5) do |voice, pitch, velocity, step, t|
    time_warp t do
      sample groove_samples.fetch(voice, :drum_cymbal_closed), amp: velocity
    end
  end
end
