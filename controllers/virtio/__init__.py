"""virtio front ends: split virtqueues (`virtqueue`), the virtio-pci modern transport (`pci`), and devices
(`blk`: virtio-blk over a Drive). Layouts and constants are in `layouts`; facts and sources in
../shared/research/controllers.md section 4.
"""
