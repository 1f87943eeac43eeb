"""Suite configs: the DTS ``.cfg`` reader and the typed VM parameter model (pure code)."""
