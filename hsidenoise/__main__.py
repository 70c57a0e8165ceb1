"""`python -m hsidenoise` runs the command-line interface."""

from hsidenoise.cli import app

app()
