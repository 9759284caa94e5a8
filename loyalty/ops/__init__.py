"""Operations: what runs beside the tills: the scheduled jobs (:mod:`.jobs`: release, expiry, tiers),
history import (:mod:`.importer`), monthly and partner reports (:mod:`.reports`), the dashboard's
figures (:mod:`.dashboard`) and the books' auditor behind ``loyalty audit`` (:mod:`.audit`).

The top room of the domain: it may import any other; nothing in :mod:`loyalty` imports it.
"""
