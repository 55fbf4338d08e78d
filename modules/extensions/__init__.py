"""Extensions: A1111's extensions/<name>/ folders, found, loaded and managed (modules.extensions.api
is what extension code may use)."""
