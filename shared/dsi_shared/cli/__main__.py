"""`python -m dsi_shared.cli` (how `dsi up` starts each service process)."""

from dsi_shared.cli import main

main()
