"""Input conversion: float32 C-contiguous arrays pass through untouched (the native side borrows
them); anything else is converted once, here."""

import numpy as np


def as_input(x, what="input"):
    """Return ``x`` itself when it is already float32 C-contiguous, else a converted copy."""
    if isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous:
        return x
    try:
        return np.ascontiguousarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        from .errors import InputError

        raise InputError(f"{what} cannot be converted to a float32 array: {exc}") from None
