"""Linux's block layer between a discard and the driver (controllers/drivers/blk_layer.py): which bios a range
becomes, where bio_split_discard cuts them, and which of them share a request."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controllers.drivers.blk_layer import (
    UINT_MAX,
    DiscardLimits,
    bio_allowed_max_sectors,
    discard_requests,
    issue_bios,
    split_bio,
)


def test_issue_bios_puts_an_unaligned_head_in_a_bio_of_its_own():
    assert issue_bios(3, 100, 8) == [(3, 5), (8, 95)]
    assert issue_bios(8, 100, 8) == [(8, 100)]
    assert issue_bios(3, 4, 8) == [(3, 4)]
    # past 4 GiB: bios of round_down(UINT_MAX, granularity) bytes
    assert issue_bios(0, 1 << 24, 8) == [(0, 8388600), (8388600, 8388600), (16777200, 16)]


def test_split_bio_follows_bio_split_discard():
    assert split_bio(0, 100, DiscardLimits(40)) == [(0, 40), (40, 40), (80, 20)]
    assert split_bio(3, 100, DiscardLimits(40, 8)) == [(3, 37), (40, 40), (80, 23)]    # cuts end on the granularity
    assert split_bio(0, 100, DiscardLimits(40, 8, alignment=2)) == [(0, 34), (34, 40), (74, 26)]   # on 8k + 2
    assert split_bio(0, 10, DiscardLimits(4194303, 8)) == [(0, 10)]
    assert split_bio(0, 100, DiscardLimits(4, 8)) == [(0, 100)]          # limit below the granularity: no split
    assert bio_allowed_max_sectors() == 0x7FFFFF and bio_allowed_max_sectors(4096) == 0x7FFFF8
    assert split_bio(0, 1 << 24, DiscardLimits(UINT_MAX, logical_block=4096))[0] == (0, 0x7FFFF8)


def test_split_pieces_never_merge_but_the_rest_of_a_range_does():
    one = DiscardLimits(16, 1)
    # the head bio (0..3) and the unsplit bio after it merge (contiguous, within the limit)
    assert discard_requests([(0, 4), (4, 8)], one) == [[(0, 12)]]
    # split pieces stand alone; the last piece of a split takes the next small contiguous bio
    assert discard_requests([(0, 40), (40, 4)], one) == [[(0, 16)], [(16, 16)], [(32, 12)]]
    # front merge, and no merge past the limit or across a gap
    assert discard_requests([(8, 4), (4, 4)], one) == [[(4, 8)]]
    assert discard_requests([(0, 10), (10, 10)], one) == [[(0, 10)], [(10, 10)]]
    assert discard_requests([(0, 4), (8, 4)], one) == [[(0, 4)], [(8, 4)]]
    assert discard_requests([(0, 0), (5, 0)], one) == []


def test_multi_segment_queues_take_any_bio_as_one_more_segment():
    many = DiscardLimits(64, 1, max_segments=3)
    assert discard_requests([(0, 8), (100, 8), (200, 8), (300, 8)], many) == [[(0, 8), (100, 8), (200, 8)],
                                                                              [(300, 8)]]
    assert discard_requests([(0, 60), (100, 8)], many) == [[(0, 60)], [(100, 8)]]       # total over 64
    # an unaligned head and the rest of its range are two bios, so two segments of one request
    assert discard_requests([(3, 20)], DiscardLimits(64, 8, max_segments=2)) == [[(3, 5), (8, 15)]]


@pytest.mark.parametrize("limits", [DiscardLimits(16, 1), DiscardLimits(64, 8, max_segments=4),
                                    DiscardLimits(40, 8, alignment=2)])
@given(ranges=st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 200)), max_size=6))
def test_requests_cover_the_ranges_exactly_within_the_limits(limits, ranges):
    requests = discard_requests(ranges, limits)
    covered = sorted(seg for request in requests for seg in request)
    expected = sorted(b for s, n in ranges if n > 0 for b in issue_bios(s, n, limits.granularity))
    assert sum(n for _, n in covered) == sum(n for _, n in expected)
    for request in requests:
        assert len(request) <= limits.max_segments
        assert sum(n for _, n in request) <= limits.max_sectors
