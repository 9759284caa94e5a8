"""Points: the operations a till and a marketer perform on a member's points: purchases
(:mod:`.posting`), returns (:mod:`.refunds`), redemptions (:mod:`.redemptions`), manual adjustments
(:mod:`.adjustments`), and what a member or cashier reads back (:mod:`.balances`,
:mod:`.transactions`); a till's JSON basket (:mod:`.baskets`).

Each operation is a :class:`loyalty.ledger.Booking` handed to the ledger writer. Imports the rooms
below it: ledger, members, programs, admin (idempotency records), storage, and :mod:`rules`.
"""
