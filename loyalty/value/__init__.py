"""Customer value: what each member's purchases say about them: recency, frequency and spend, RFM
scores within the tenant, their own rhythm and whether they are drifting away from it
(:mod:`.figures`), and the BG/NBD and Gamma-Gamma models behind the predicted value (:mod:`.models`).

Imports :mod:`loyalty.storage` (purchases are read set-based, per tenant) and numpy/scipy; the jobs
in :mod:`loyalty.ops` run it, and nothing below the points services needs it.
"""
