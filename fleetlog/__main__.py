"""``python -m fleetlog``: the same command as the installed ``fleetlog`` script."""

from __future__ import annotations

from fleetlog.cli.main import main

if __name__ == "__main__":
    main()
