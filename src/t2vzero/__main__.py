"""`python -m t2vzero` runs the command line."""

from .cli import entry

entry()
