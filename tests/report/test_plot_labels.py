"""The forget-vs-utility scatter's labels: neighbouring points share one, none print over another."""

from __future__ import annotations

from moe_unlearn.report.plots import label_groups


def _pts(*xy: tuple[float, float]) -> list[tuple[str, float, float]]:
    return [(f"run{i}", x, y) for i, (x, y) in enumerate(xy, 1)]


def test_neighbours_share_a_label_across_any_grid_boundary() -> None:
    # 0.2374 and 0.2376 straddle a rounding boundary at 0.2375; they must still share
    groups = label_groups(_pts((0.2374, 0.98), (0.2376, 0.98), (0.27, 0.96)))
    assert [ids for _, _, ids in groups] == [[1, 2, 3]]


def test_points_apart_keep_their_own_labels() -> None:
    groups = label_groups(_pts((0.25, 0.98), (0.25, 0.70), (0.60, 0.98), (0.25, 0.72)))
    assert [ids for _, _, ids in groups] == [[1], [2, 4], [3]]


def test_every_point_is_labelled_once_right_of_its_group() -> None:
    pts = _pts(*[(0.01 * i, 0.5 + 0.013 * (i % 5)) for i in range(40)])
    groups = label_groups(pts)
    ids = sorted(i for _, _, g in groups for i in g)
    assert ids == list(range(1, 41))
    firsts = [pts[g[0] - 1][1:] for _, _, g in groups]  # no two groups start within one label's box
    assert all(abs(a[0] - b[0]) > 0.08 or abs(a[1] - b[1]) > 0.03
               for i, a in enumerate(firsts) for b in firsts[i + 1:])
    for x, y, g in groups:
        members = [pts[i - 1] for i in g]
        assert g == sorted(g)
        assert x == max(m[1] for m in members)  # the label starts right of every member
        assert min(m[2] for m in members) <= y <= max(m[2] for m in members)


def test_a_groups_label_sits_right_of_its_rightmost_point() -> None:
    (x, y, ids), = label_groups(_pts((0.43, 0.79), (0.45, 0.81), (0.50, 0.80)))
    assert ids == [1, 2, 3] and x == 0.50 and abs(y - 0.80) < 1e-12
