"""VHD ("vpc" in qemu-img): Virtual PC / Hyper-V's first format, fixed, dynamic and differencing."""
