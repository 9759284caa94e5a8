"""Admin: tenants, their partners and outlets (:mod:`.tenants`); API keys and the idempotency
records of retried till requests (:mod:`.access`).

Imports :mod:`loyalty.storage` and, for an idempotency answer written with a ledger operation,
:mod:`loyalty.ledger`.
"""
