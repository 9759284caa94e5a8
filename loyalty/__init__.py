"""The loyalty domain and its storage: tenants, members, cards, the points ledger, tiers, rewards, jobs.

Uses :mod:`rules`; knows nothing of HTTP.
"""
