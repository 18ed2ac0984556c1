"""emu: a device-emulation simulator for hypervisor storage.

The path of one request: guest driver -> controller front end -> block layer (`emu.block.Drive`) ->
image backend (`images`) -> host file. This package holds the block layer, the shared error family,
units and the command line.
"""
