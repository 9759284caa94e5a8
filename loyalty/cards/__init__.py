"""Cards: printed numbers with a check digit, signed QR tokens, QR images and printable batches."""
