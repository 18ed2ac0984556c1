"""Guest models, hypervisor/guest profiles and the scenario catalog (later issues)."""
