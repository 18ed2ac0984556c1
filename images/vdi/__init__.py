"""VDI, VirtualBox's format: dynamic, fixed and differencing images in 1 MiB blocks."""
