"""`python -m hsidenoise` runs the command-line interface."""

from hsidenoise.console import main

main()
