"""The chunk planner: windows grouped by the box of chunks they touch."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from xbatcher._chunkgather import plan_windows


@st.composite
def chunked_windows(draw, max_ndim=3, max_windows=40):
    """Irregular chunk bounds over 1-3 axes and windows anywhere in them, including
    windows longer than a chunk (across several chunks)."""
    ndim = draw(st.integers(1, max_ndim))
    bounds, lengths, starts = [], [], []
    count = draw(st.integers(1, max_windows))
    for _ in range(ndim):
        sizes = draw(st.lists(st.integers(1, 6), min_size=1, max_size=5))
        b = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        n = int(b[-1])
        w = draw(st.integers(1, n))
        s = draw(st.lists(st.integers(0, n - w), min_size=count, max_size=count))
        bounds.append(b)
        lengths.append(w)
        starts.append(np.array(s, dtype=np.int64))
    return tuple(bounds), tuple(starts), tuple(lengths)


def chunk_of(b, i):
    return int(np.searchsorted(b, i, side="right") - 1)


@settings(max_examples=200, deadline=None)
@given(case=chunked_windows())
def test_every_window_in_one_group_with_its_chunks_and_offsets(case):
    bounds, starts, lengths = case
    count = starts[0].size
    groups = plan_windows(bounds, starts, lengths)
    rows = np.concatenate([g.rows for g in groups])
    assert sorted(rows.tolist()) == list(range(count))  # each window exactly once
    firsts = [g.lo for g in groups]
    assert firsts == sorted(firsts)  # groups in C order of their first chunk
    for g in groups:
        assert g.rows.tolist() == sorted(g.rows.tolist())
        assert [r.shape for r in g.rel] == [g.rows.shape] * len(bounds)
        for k, row in enumerate(g.rows.tolist()):
            for d, (b, s, n) in enumerate(zip(bounds, starts, lengths, strict=True)):
                start = int(s[row])
                # the box is exactly the chunks the window touches
                assert g.lo[d] == chunk_of(b, start)
                assert g.hi[d] == chunk_of(b, start + n - 1)
                # the window lies in the group's block at its relative start
                assert g.origin[d] + int(g.rel[d][k]) == start
                assert g.origin[d] <= start and start + n <= g.stop[d]
        if g.single:  # the block is the chunk itself
            for d, b in enumerate(bounds):
                assert (g.origin[d], g.stop[d]) == (b[g.lo[d]], b[g.lo[d] + 1])
        else:  # a stitched block: only the windows' bounding box
            for d, n in enumerate(lengths):
                assert int(g.rel[d].min()) == 0
                assert g.stop[d] - g.origin[d] == int(g.rel[d].max()) + n
        # chunk_ids are the chunks every window of the group touches, no others
        row = int(g.rows[0])
        touched = itertools.product(
            *(
                range(chunk_of(b, int(s[row])), chunk_of(b, int(s[row]) + n - 1) + 1)
                for b, s, n in zip(bounds, starts, lengths, strict=True)
            )
        )
        assert sorted(g.chunk_ids()) == sorted(touched)


def test_empty_request_has_no_groups():
    bounds = (np.array([0, 4, 8]),)
    assert plan_windows(bounds, (np.zeros(0, np.int64),), (2,)) == []
