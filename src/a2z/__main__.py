"""``python -m a2z`` runs the ``a2z`` command."""

from a2z.cli import main

raise SystemExit(main())
