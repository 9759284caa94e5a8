"""Chaos scenarios of the trust suite (issue 12): bounded in `make test`, long in `make soak`."""
