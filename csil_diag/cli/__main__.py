"""``python -m csil_diag.cli …`` = ``csil-diag …`` (the tests and experiments/ run it this way)."""

from csil_diag.cli import main

main()
