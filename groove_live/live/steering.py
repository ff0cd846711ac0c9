"""Live attribute steering: /groove/style, /groove/density, /groove/syncopation, /groove/fill.

The model's attribute vectors (groove_live/attributes.py) move the latent the server decodes:
every decoded bar plays z + offset, where z is what the planner plans (a sample, a walk, a
morph) and the offset the sum of the steering settings, so a walk goes on wandering around the
steered groove and a new sample is steered too. A change lands like any other request, from
the next bar (or phrase, with /groove/quantize phrase). /groove/fill plays one bar, the last
bar of the decoded z + offset + fill vector, in place of the current phrase's last bar; the
phrase after it plays as before.

The OSC thread only validates and hands a planner command (Steer, Fill) to the worker; the
worker's planner places it and its decode adds the offset (steered_latent).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..attributes import HOW_TO_ADD, MAX_STYLE_AMOUNT, Attributes, AttributesError

NO_STYLE = "none"  # /groove/style none: stop steering toward a style


class SteeringError(ValueError):
    """A steering request refused: the reason of /groove/error, one line."""


# --- planner commands (applied by planner.Planner.apply) --------------------------------------
@dataclass(frozen=True, eq=False)
class Steer:
    """From the next bar (or phrase) on, decode z + offset; None steers nothing."""

    offset: np.ndarray | None


@dataclass(frozen=True, eq=False)
class Fill:
    """One bar at the end of the current phrase: the last bar of z + offset + this fill vector
    decoded."""

    offset: np.ndarray


def fill_bar(phrase_start_bar: int, first_free_bar: int, bars_per_phrase: int) -> int:
    """The last bar of the phrase that is playing, or of the next one when that bar is already
    taken: the first bar >= first_free_bar that ends a phrase started at phrase_start_bar."""
    k = max(1, math.ceil((first_free_bar + 1 - phrase_start_bar) / bars_per_phrase))
    return phrase_start_bar + k * bars_per_phrase - 1


def steered_latent(z: np.ndarray, offset: np.ndarray | None,
                   fill: np.ndarray | None = None) -> np.ndarray:
    """The latent a bar is decoded from: the planned z plus the steering (and a fill)."""
    if offset is None and fill is None:
        return z
    out = np.asarray(z, np.float32)
    if offset is not None:
        out = out + offset
    if fill is not None:
        out = out + fill
    return out.astype(np.float32)


class Submit(Protocol):
    def submit(self, request: Any) -> None: ...


class LiveSteering:
    """The steering settings (OSC thread), turned into planner commands for the worker."""

    def __init__(self, attributes: Attributes | None, worker: Submit) -> None:
        self.attributes = attributes
        self.worker = worker
        self._lock = threading.Lock()  # settings are read by /groove/info on the same thread,
        self.style = ""                # but tests and the server may call from others
        self.style_amount = 0.0
        self.density = 0.0
        self.syncopation = 0.0
        self.fills = 0

    def _need(self) -> Attributes:
        if self.attributes is None:
            raise SteeringError(f"this model has no attribute vectors; {HOW_TO_ADD}")
        return self.attributes

    def _offset(self) -> np.ndarray | None:
        if not self.style and not self.density and not self.syncopation:
            return None
        try:
            return self._need().offset(self.style or None, self.style_amount or 1.0,
                                       self.density, self.syncopation)
        except AttributesError as e:  # validated before; a bug if reached
            raise SteeringError(str(e)) from None

    def _apply(self, **settings) -> None:
        with self._lock:
            before = {k: getattr(self, k) for k in settings}
            for k, v in settings.items():
                setattr(self, k, v)
            try:
                offset = self._offset()
            except SteeringError:
                for k, v in before.items():
                    setattr(self, k, v)
                raise
        self.worker.submit(Steer(offset))

    def set_style(self, name: str, amount: float = 1.0) -> tuple[str, float]:
        """Steer toward a style (NO_STYLE or amount 0: toward none). Returns (name, amount)."""
        attributes = self._need()
        if not isinstance(name, str):
            raise SteeringError("style must be a string")
        if not (isinstance(amount, (int, float)) and not isinstance(amount, bool)
                and math.isfinite(amount) and 0.0 <= amount <= MAX_STYLE_AMOUNT):
            raise SteeringError(f"amount must be in [0, {MAX_STYLE_AMOUNT:g}], got {amount!r}")
        if name == NO_STYLE or amount == 0:
            self._apply(style="", style_amount=0.0)
            return NO_STYLE, 0.0
        try:
            attributes.style_vector(name)
        except AttributesError as e:
            raise SteeringError(f"{e}, {NO_STYLE}") from None
        self._apply(style=name, style_amount=float(amount))
        return name, float(amount)

    def set_scaled(self, name: str, x: float) -> float:
        """density / syncopation x in [-1, 1] (0: no steering)."""
        attributes = self._need()
        try:
            attributes.scaled_vector(name)
        except AttributesError as e:
            raise SteeringError(str(e)) from None
        if not (isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                and -1.0 <= x <= 1.0):
            raise SteeringError(f"{name} must be in [-1, 1], got {x!r}")
        self._apply(**{name: float(x)})
        return float(x)

    def fill(self) -> None:
        """One fill bar at the end of the current phrase."""
        try:
            vector = self._need().fill_vector()
        except AttributesError as e:
            raise SteeringError(str(e)) from None
        with self._lock:
            self.fills += 1
        self.worker.submit(Fill(vector))

    def info(self) -> list[tuple[str, Any]]:
        """/groove/info's steering keys: what the model offers and what is set."""
        a = self.attributes
        with self._lock:
            return [("styles", ",".join(a.style_names) if a else ""),
                    ("steering", ",".join([n for n in ("density", "syncopation")
                                           if a and n in a.scaled]
                                          + (["fill"] if a and a.fill is not None else []))),
                    ("style", self.style or NO_STYLE),
                    ("style_amount", float(self.style_amount)),
                    ("density", float(self.density)),
                    ("syncopation", float(self.syncopation)),
                    ("fills", int(self.fills))]
