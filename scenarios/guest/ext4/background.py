"""What a mounted ext4 does while nobody asks it anything: the ext4lazyinit thread zeroing the inode tables mkfs left
(lazy_itable_init), jbd2 committing the running transaction after its commit interval, and the flusher writing
back pages dirty for longer than dirty_expire. Linux 6.1's constants, and the lazy-init request's state.

Checked against the kernel's own trace (tests/oracle/linux-6.1/lazy-init-*.txt): per group not yet zeroed, one
sb_issue_zeroout of the inode table's blocks past those holding inodes in use (WRITE ZEROES with unmap allowed where
the queue has them, zero-page writes otherwise), a cache flush after the first group only, the group descriptor
block journalled; then the commit, and the descriptor block written home by the flusher. Not modelled: the thread's
first phase, which reads the block bitmaps (ext4_mb_prefetch): reads change nothing on the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_START_DELAY = 5.0       # fs/ext4/ext4.h EXT4_DEF_LI_MAX_START_DELAY: the first run, at random within it (s)
WAIT_MULT = 10              # EXT4_DEF_LI_WAIT_MULT: `init_itable=N`'s default
JIFFY = 1 / 250             # Debian's 6.1 amd64 kernel: CONFIG_HZ=250 (its /boot/config-6.1.0-*-amd64)
COMMIT_INTERVAL = 5.0       # jbd2 JBD2_DEFAULT_MAX_COMMIT_AGE, ext4's `commit=` default (s)
DIRTY_EXPIRE = 30.0         # vm.dirty_expire_centisecs 3000: the flusher writes pages dirty for this long (s)


@dataclass
class LazyInit:
    """The ext4lazyinit request of one mount (fs/ext4/super.c ext4_li_request): when it runs next, from which group,
    and its pause between groups (0 until the first group is done)."""

    next_sched: float
    wait_mult: int
    next_group: int = 0
    timeout: float = 0.0

    def paused(self, elapsed: float) -> None:
        """After the first group, the pause is its time times the multiplier, in whole jiffies (ext4_run_li_request:
        nsecs_to_jiffies rounds down; a pause of 0 keeps the next group's cache flush)."""
        if self.timeout == 0:
            self.timeout = math.floor(elapsed * self.wait_mult / JIFFY + 1e-9) * JIFFY
