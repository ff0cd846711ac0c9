"""groove-live: a GrooVAE drum-groove generator for live coders (runtime package, no torch)."""
__version__ = "0.1.0"
