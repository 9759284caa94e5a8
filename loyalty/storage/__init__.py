"""Storage: the tables (:mod:`.models`), engines and sessions (:mod:`.db`), Alembic migrations, the
audit log of marketers' and admins' changes (:mod:`.audit_log`), and owner-only files (:mod:`.private`).

Imports nothing of ours but :mod:`loyalty.errors`; every other room stands on it.
"""
