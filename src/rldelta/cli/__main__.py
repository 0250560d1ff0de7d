"""`python -m rldelta.cli`: the same app as the `rldelta` script."""

from rldelta.cli import main

main()
