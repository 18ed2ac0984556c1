"""VHDX (Hyper-V): layout, metadata log, image backend and creation."""
