"""onnxruntime, telemetry off: the one place groove-live imports it (`from .ort import ort`).

Since 1.29, onnxruntime's official Linux/macOS wheels carry Microsoft's 1DS telemetry. Measured
with 1.32: about 9 s after start, then every ~10 s, the process looks up
mobile.events.data.microsoft.com and tries HTTPS connections to it; it also keeps a device ID
and an event database under ~/.cache/Microsoft/DeveloperTools/.onnxruntime/. A live rig makes
no outbound traffic of its own, so groove-live turns this off.
`ort.disable_telemetry_events()` alone does not: the lookups go on. ORT_DISABLE_TELEMETRY=1
does, but onnxruntime reads it once, when it is imported: set after the import it is too late
(the device ID is already written). Hence this module, through which every import of
onnxruntime in groove-live goes, so the variable is always set first.

If the host program imported onnxruntime before groove-live, this cannot undo it (see
docs/network.md). Child processes inherit the variable, which is wanted.
"""
from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import onnxruntime as ort  # noqa: E402  (after the variable, on purpose: see above)

# For builds whose telemetry ignores the variable (Windows' own event tracing).
ort.disable_telemetry_events()

__all__ = ["ort"]
