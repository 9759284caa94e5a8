"""Programs: versions marketers draft and publish (:mod:`.versions`), the tier ladder a program
defines (:mod:`.tiers`), and the backtest that prices a draft against recorded history (:mod:`.backtest`).

Imports :mod:`rules` and :mod:`loyalty.storage`. It sits below the ledger: the writer reads versions
through the few methods of a unit of work that :class:`.versions.Unit` names, never the reverse.
"""
