"""The one error type a user can cause; the CLI prints it as a single line."""


class VlmscopeError(ValueError):
    """Bad input from the user: a bad path, spec, column or model. The message names the bad
    value and what is accepted."""
