# groove-live's harmonizer from Sonic Pi: send a 2-bar melody and hear it sung by four voices,
# alto, tenor and bass written under it by a model trained on Bach's chorales, over the drums.
# Run groove.rb in another buffer to hear the drums too.
#
# 1. Start groove-live with a harmonizer, sending to Sonic Pi's incoming-OSC (cue) port 4560:
#        groove-live serve --harmonizer chorale_harmonizer --send 127.0.0.1:4560
# 2. Preferences > IO: allow incoming OSC. Paste this into a buffer, press Run.
#
# A melody is one MIDI note per 16th (0 = rest): 32 for the 2 bars, or 16 for one bar played
# twice. A pitch repeated is one held note. Or send one string: "67 - - - 69 - _ _ ..." where
# - holds the note before and _ rests. The voices start on groove-live's next bar and loop
# until the next melody; osc "/groove/accompany/stop" ends them. Replies go to the cue log:
# /osc*/groove/ack and /osc*/groove/error name the request they answer.

use_osc "127.0.0.1", 57120

# Ode to Joy's first two bars, in quarter notes (4 sixteenths each).
melody = [64, 64, 65, 67, 67, 65, 64, 62].flat_map { |n| [n] * 4 }
osc "/groove/accompany", *melody

# Every voice arrives as /groove/note at the moment it should sound, the melody too:
# voice, pitch, velocity (0..1), duration in seconds, bar, step, voice index (0 = melody).
# use_real_time plays it on arrival instead of sched_ahead_time later.
live_loop :harmony do
  use_real_time
  voice, pitch, velocity, duration_s = sync "/osc*/groove/note"
  melody_voice = (voice == "soprano")
  sound = melody_voice ? :pulse : :tri
  synth sound, note: pitch, amp: velocity * (melody_voice ? 0.5 : 0.35),
    attack: 0.01, sustain: [duration_s - 0.06, 0].max, release: 0.05,
    pan: {"soprano" => 0.3, "alto" => -0.3, "tenor" => 0.15, "bass" => -0.1}.fetch(voice, 0)
end
