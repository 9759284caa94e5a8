"""Events out: webhook endpoints of a tenant (created, rotated, disabled), the dispatcher that fans
the outbox (:mod:`loyalty.storage.outbox`) out into deliveries and sends them as signed Standard
Webhooks with retries, ordering per member and a dead-letter state, the guard against private
targets, and the expiry-reminder job.

Imports :mod:`loyalty.storage`, :mod:`loyalty.programs` (the reminder days of the program in force)
and the rooms below it; the API, the command line and ``loyalty serve`` run it.
"""
