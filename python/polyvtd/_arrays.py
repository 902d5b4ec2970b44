"""Argument checks done before the native side, which takes unsigned sizes. (Array conversion
lives on the native side: src/python/arrays.rs.)"""


def non_negative(**values):
    """Raise SpecError naming the first argument that is not an integer ≥ 0."""
    import numbers

    from .errors import SpecError

    for name, value in values.items():
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
            raise SpecError(f"{name} must be an integer ≥ 0, got {value!r}")
