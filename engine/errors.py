"""Errors the engine raises on purpose, so callers can tell bad input from bugs."""


class UserError(Exception):
    """Bad input: the message names the problem and the fix (CLI exit code 2)."""


class Cancelled(Exception):
    """The user cancelled a long operation (CLI exit code 130)."""


class NeedsTrust(UserError):
    """The file holds code (a pickled object or TorchScript): it may be loaded only with the user's trust."""

    def __init__(self, message: str, what: str):
        super().__init__(message)
        self.what = what  # "pickle" or "torchscript"


class NeedsArchitecture(UserError):
    """The file holds only weights: the model's architecture must be named before it can be built.

    Its own class so the window can answer it with the Open model dialog instead of the command line's
    flags, which the message names."""


def first_line(exc: BaseException, with_type: bool = False, limit: int = 200) -> str:
    """The first line of an exception's message, cut at `limit` (its type name when it has no message),
    for one-line errors; `with_type` puts the type name in front."""
    lines = str(exc).strip().splitlines()
    text = lines[0][:limit] if lines else ""
    if with_type:
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text or type(exc).__name__


def resource_error(exc: BaseException) -> "UserError | None":
    """The one-line UserError for running out of memory (CPU or GPU), or None for any other exception."""
    text = str(exc)
    if type(exc).__name__ == "BudgetExceeded":  # the watchdog's signal, caught outside the guarded job
        return UserError("the job reached the memory limit and was stopped; try a smaller --batch-size, fewer "
                         "evaluation images (--eval-limit) or a higher --memory-limit")
    if type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in text:
        return UserError("the GPU ran out of memory; try a smaller --batch-size, fewer evaluation images "
                         "(--eval-limit) or --device cpu")
    if isinstance(exc, MemoryError) or "DefaultCPUAllocator: can't allocate memory" in text:
        return UserError("the machine ran out of memory; try a smaller --batch-size or fewer evaluation images "
                         "(--eval-limit)")
    return None
