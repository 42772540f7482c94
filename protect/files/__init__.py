"""Files: reading artwork, writing protected images in every output format, and the one atomic write."""
