"""Cards: printed numbers with a check digit (:mod:`.numbers`), signed QR tokens (:mod:`.tokens`) and the
server secrets their keys derive from (:mod:`.secrets`), QR images (:mod:`.qr`) and printable sheets
(:mod:`.sheet`).

Pure: no database. Imports :mod:`loyalty.errors` only.
"""
