"""Errors a user can fix. The entry scripts print them as one line and exit non-zero."""


class UserError(Exception):
    """Bad input: a config value, a path, a missing resource. The message says what is accepted."""


class ConfigError(UserError, ValueError):
    pass


class DataError(UserError):
    pass


class CheckpointError(UserError):
    pass
