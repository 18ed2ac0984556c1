"""VMDK hosted sparse extents (monolithicSparse) and delta links by content id."""
