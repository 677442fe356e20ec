"""HTTP routes. They only orchestrate: SQL lives in ``db/``, torch in ``training/``."""
