"""util.memory: the one reader of this process's resident memory (GUI status line, benchmark)."""
import mmap

import numpy as np

from util.memory import current_rss_bytes, current_rss_mib, peak_rss_bytes

SIZE = 64 * 2 ** 20


def test_current_and_peak_rss_follow_an_allocation():
    before = current_rss_bytes()
    assert before > 10 * 2 ** 20                       # the interpreter and numpy alone
    # a fresh anonymous mapping (never pages the allocator already holds), every page touched
    block = mmap.mmap(-1, SIZE)
    np.frombuffer(block, np.uint8)[:] = 1
    during = current_rss_bytes()
    assert during - before > SIZE * 3 // 4
    assert peak_rss_bytes() >= during
    assert abs(current_rss_mib() * 2 ** 20 - current_rss_bytes()) < 16 * 2 ** 20
    block.close()
    # the peak stays (the kernel's high-water mark may trail by a few pages), the current value drops
    assert peak_rss_bytes() > during - 2 ** 20
    assert peak_rss_bytes() - current_rss_bytes() > SIZE * 3 // 4
