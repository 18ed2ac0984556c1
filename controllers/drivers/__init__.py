"""Guest-side driver models: they encode commands into guest memory and ports exactly as a real driver does.

Modules: `libata` (when libata uses 28-bit commands; how Linux turns a discard into WRITE SAME(16) and then one
DSM TRIM), `ata_piix` (Linux ata_piix + libata over a PIIX IDE channel), `ahci` (Linux ahci + libata over an AHCI
HBA), `virtio_pci` (the modern virtio-pci transport and its queues), `virtio_blk`, `virtio_scsi`, and `sd` (Linux's
SCSI disk layer over any SCSI command path). Their methods are SimPy generators: run them with ``sim.process(...)``
and read the process's value.
"""
