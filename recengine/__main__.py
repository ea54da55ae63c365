"""`python -m recengine ...`: the command line (see `recengine.cli`)."""

import os

# Idle OpenMP threads sleep instead of spinning (a busy machine otherwise slows torch several-fold);
# this must happen before torch loads, so here at the process entry point, not on import of the library.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from recengine.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
