"""qcow2 (versions 2 and 3) as QEMU 7.2 reads and writes it. Spec: qemu docs/interop/qcow2.txt."""
