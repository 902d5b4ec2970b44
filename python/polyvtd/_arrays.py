"""Argument conversion and checks: float32 C-contiguous arrays pass through untouched (the
native side borrows them), anything else is converted once; integer arguments are checked
before they reach the native side (which takes unsigned sizes)."""

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


def non_negative(**values):
    """Raise SpecError naming the first argument that is not an integer ≥ 0."""
    import numbers

    from .errors import SpecError

    for name, value in values.items():
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
            raise SpecError(f"{name} must be an integer ≥ 0, got {value!r}")
