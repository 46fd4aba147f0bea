"""`python -m component` is the same as the `xmpp-gateway` command."""

from component.cli import main

raise SystemExit(main())
