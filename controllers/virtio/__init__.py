"""virtio front ends: split virtqueues (`virtqueue`), the virtio-pci modern transport (`pci`), and devices
(`blk`: virtio-blk over a Drive). Layouts and constants are in `layouts`, which names the sources: virtio 1.2
and QEMU 8.2.1's virtio headers and hw/virtio, hw/block sources.
"""
