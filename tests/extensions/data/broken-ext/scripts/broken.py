"""Fails at import: the loader must switch this extension off and start anyway."""

import this_module_does_not_exist  # noqa: F401
