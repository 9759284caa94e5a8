"""Members' data: the export of everything the engine holds about a member, erasure (personal data
removed, the books kept exact) and the retention job that purges old basket detail.

Imports the rooms below it (storage, ledger, members, points, value, events); the admin API and the
command line run it.
"""
