"""Customer value: what each member's purchases say about them: recency, frequency and spend, RFM
scores within the tenant, their own rhythm and whether they are drifting away from it
(:mod:`.figures`); the BG/NBD and Gamma-Gamma models behind the predicted value (:mod:`.models`);
segment runs that place members in the program's segments and keep their moves (:mod:`.segments`);
and the lift of a campaign against its control group (:mod:`.campaigns`).

Imports :mod:`loyalty.storage`, :mod:`loyalty.programs` (the segments of the program in force) and
numpy/scipy; the command line and the demo run it. The points services below read only what a run
stored (``members.segment``), never this package.
"""
