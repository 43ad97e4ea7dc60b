"""The one exception type for a user's mistake: a bad config value, block string, path, dataset or flag.

Command lines print it as one `error: ...` line (`effnetx_jax.cli`); anything else is a bug and keeps
its traceback. It is a `ValueError`, so library callers that catch `ValueError` keep working.
Only the standard library is imported here: every module may raise it without pulling in JAX.
"""


class UserError(ValueError):
    """The user's input is wrong; the message names the key, token, path or flag and what to do."""


def root_cause(error: BaseException) -> BaseException:
    """The exception at the end of `error`'s chain (`raise ... from` or raised while handling): the one
    that says what actually went wrong when libraries wrap it in their own."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return error
