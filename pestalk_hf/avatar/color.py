"""sRGB ↔ linear colour conversion (IEC 61966-2-1), the one copy the avatar code uses.

Why: glTF 2.0 stores ``baseColorFactor`` and ``COLOR_0`` as *linear* RGB and ``baseColorTexture``
as sRGB-encoded; viewers (three.js, Blender, the Khronos sample viewer) light in linear and encode
the result to sRGB for the screen. Colours chosen by eye (our head's skin, the fallback role
colours) are sRGB values, so they are converted to linear before they are written or shaded, and
the renderer encodes its linear result back to sRGB; then our own renders and those viewers agree.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

# IEC 61966-2-1 piecewise curve: a linear toe below the break, a 2.4 power with offset above it.
_SRGB_BREAK = 0.04045  # in encoded (sRGB) values
_LINEAR_BREAK = 0.0031308  # the same point in linear values (0.04045 / 12.92)


def srgb_to_linear(values: ArrayLike) -> np.ndarray:
    """sRGB-encoded values in [0, 1] → linear light (float64 array of the same shape; clipped to [0, 1])."""
    c = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= _SRGB_BREAK, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(values: ArrayLike) -> np.ndarray:
    """Linear light in [0, 1] → sRGB-encoded values (float64 array of the same shape; clipped to [0, 1])."""
    c = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= _LINEAR_BREAK, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)
