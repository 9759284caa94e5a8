"""Members: the member and card accounts (:mod:`.membership`: create, bind a blank card on first use,
block, replace, and the one path from a card to its member), what a till's scan names
(:mod:`.lookup`: card URL, token or typed number), and printed card batches (:mod:`.batches`).

Imports :mod:`loyalty.cards`, :mod:`loyalty.ledger` (a member's balances as the ledger holds them),
:mod:`loyalty.programs` and :mod:`loyalty.storage`; never the points services above it.
"""
