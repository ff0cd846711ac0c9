# groove-live's tasks from Sonic Pi: humanize a beat written in code, then tap a rhythm that
# groove-live turns into a whole kit. Run groove.rb in another buffer to hear what it plays.
#
# 1. Start groove-live, sending to Sonic Pi's incoming-OSC (cue) port 4560:
#        groove-live serve --send 127.0.0.1:4560
# 2. Preferences > IO: allow incoming OSC. Paste this into a buffer, press Run.
#
# Results start at groove-live's next phrase start (every 4 bars) and loop until you ask for
# something else (osc "/groove/sample" goes back to sampled grooves). Replies go to Sonic
# Pi's cue log: /osc*/groove/ack and /osc*/groove/error name the request they answer.

use_osc "127.0.0.1", 57120

# Humanize: one step string per voice, one character per 16th: x hit, X accent, o ghost note,
# . rest. 16 steps are a bar (repeated to the model's 2 bars), or give 32. Accents stay louder
# than the plain hits of their voice; the model adds the dynamics and the timing.
osc "/groove/humanize",
  "kick",         "X.......x.X.....",
  "snare",        "....X..o....X..o",
  "closed_hihat", "x.x.x.x.x.x.x.x."

# Tap: each /groove/tap is placed on groove-live's bar grid (nearest 16th, and how far off it).
# A take is /groove/tap/bars bars long (here 1); when its bar has passed, groove-live's drumify
# model plays a kit in your rhythm, with your timing, from its next phrase start.
# `osc` goes out at its logical time plus sched_ahead_time, and /groove/bar arrives that much
# before its downbeat, so a tap written `s` 16ths into this loop reaches groove-live on step s.
osc "/groove/tap/bars", 1
rhythm = [0, 3, 6, 8, 10, 11, 14]   # the 16ths you tap; velocity 0..1 per tap
live_loop :tap do
  bar, bpm, *hits = sync "/osc*/groove/bar"
  if tick >= 4                      # after 4 bars, so the humanized beat gets its phrase first
    step_s = 60.0 / bpm / 4         # Sonic Pi's own bpm stays 60 here: beats are seconds
    rhythm.each do |s|
      time_warp s * step_s do
        osc "/groove/tap", (s % 4 == 0 ? 1.0 : 0.6)
      end
    end
    stop                            # one take; Run again for another
  end
end
