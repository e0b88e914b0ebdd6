"""`python -m fastlight <verb> ...`: the same as the `fastlight` command (see fastlight.cli)."""

from fastlight.cli import main

raise SystemExit(main())
