"""util.memory: the one reader of this process's resident memory (GUI status line, benchmark)."""
import numpy as np

from util.memory import current_rss_bytes, current_rss_mib, peak_rss_bytes


def test_current_and_peak_rss_follow_an_allocation():
    before = current_rss_bytes()
    assert before > 10 * 2 ** 20                       # the interpreter and numpy alone
    block = np.ones(64 * 2 ** 20, np.uint8)           # 64 MiB, touched
    during = current_rss_bytes()
    assert during - before > 48 * 2 ** 20
    assert peak_rss_bytes() >= during
    assert abs(current_rss_mib() * 2 ** 20 - current_rss_bytes()) < 16 * 2 ** 20
    del block
    # the peak stays (the kernel's high-water mark may trail by a few pages), the current value drops
    assert peak_rss_bytes() > during - 2 ** 20
    assert peak_rss_bytes() - current_rss_bytes() > 48 * 2 ** 20
