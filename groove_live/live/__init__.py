"""The live server: OSC control, bar-synced playback, latent walks, OSC and MIDI outputs."""
