"""The operator's command line (``loyalty ...``, :mod:`.app`) and the demo (:mod:`.demo`).

Sits on top of the domain like :mod:`api`: it imports :mod:`loyalty` and :mod:`rules`, and starts the
HTTP API only by name (``loyalty serve``); nothing in the domain imports it.
"""
