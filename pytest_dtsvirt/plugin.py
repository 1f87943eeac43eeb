"""pytest entry point of pytest-dtsvirt (options, markers, hooks). Placeholder."""
