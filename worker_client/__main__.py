"""``python -m worker_client`` is ``gan-worker``."""

from __future__ import annotations

from worker_client.cli import main

raise SystemExit(main())
