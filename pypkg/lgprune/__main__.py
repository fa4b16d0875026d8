"""`python -m lgprune` runs the command line."""

from lgprune.cli import main

main()
