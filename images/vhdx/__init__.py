"""VHDX (Hyper-V): layout, header section, metadata log and its transactions, BAT, sector bitmaps, block
slots, the image backend, relinking and creation."""

FORMAT = "vhdx"                    # qemu-img's name for the format
