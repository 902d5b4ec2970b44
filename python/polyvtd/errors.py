"""polyvtd's exceptions. Each derives from PolyError and from the builtin that fits, so
``except ValueError`` keeps working in user code."""


class PolyError(Exception):
    """Base class of every error polyvtd raises."""


class ShapeError(PolyError, ValueError):
    """An array has the wrong shape or width (the message names expected and received)."""


class SpecError(PolyError, ValueError):
    """A network spec or builder argument is invalid (names the field and coordinate)."""


class DTypeError(PolyError, TypeError):
    """Unknown dtype name, or an operation not defined for a dtype."""


class InputError(PolyError, ValueError):
    """A value is out of its domain: NaN inputs, an empty batch, a negative epoch count..."""


class ModelLoadError(PolyError, OSError, ValueError):
    """A model cannot be found or read (names the path, file, tensor or field)."""


class SaveError(PolyError, OSError):
    """A file cannot be written (names the path); an existing file at that path is left intact."""


class GpuError(PolyError, RuntimeError):
    """A GPU operation failed (device lost, out of memory, validation error)."""


class GpuUnavailableError(GpuError):
    """No GPU adapter is available."""


__all__ = [
    "PolyError",
    "ShapeError",
    "SpecError",
    "DTypeError",
    "InputError",
    "ModelLoadError",
    "SaveError",
    "GpuError",
    "GpuUnavailableError",
]
