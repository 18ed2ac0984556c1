"""What runs on the emulated hardware: profiles (sourced facts of hypervisors and guests), the guest machine (a disk
behind a controller with its Linux driver), replay scripts, and the runs assembled from them (`run`, `demo`)."""
