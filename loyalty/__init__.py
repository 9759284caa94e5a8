"""The loyalty domain, in rooms (each package's docstring says what it owns and what it imports):

``storage`` (tables, sessions, migrations) <- ``programs`` <- ``ledger`` (the one writer) <- ``admin``
<- ``members`` <- ``points`` <- ``value`` (customer figures, segments, lift) <- ``events`` (webhook
endpoints, the dispatcher, reminders) <- ``privacy`` (members' data: export, erasure, retention)
<- ``ops``; ``cards`` (numbers, tokens, QR, key secrets) is pure and stands beside them. ``errors``
(the one error tree) and ``calendar`` (local months) are shared by all.

Uses :mod:`rules`; knows nothing of HTTP or the command line (:mod:`api`, :mod:`cli` sit on top).
"""
