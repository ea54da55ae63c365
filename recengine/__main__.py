"""`python -m recengine ...`: the command line (see `recengine.cli`)."""

from recengine.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
