"""The engine's schedules on a fused model whose score output is not [N, C] class scores.

A stand-in for the fused model, worked out by hand: the layer is the input itself
(A = x, [N, 1, 2, 2]), the score output is a map S[n, i, j] = c[i, j] · Σ x[n] ([N, 2, 3], as a
segmenter's would be), and the gradient of the target's score Σ_ij w[i, j] S[n, i, j] with
respect to A is Σ_ij w[i, j] c[i, j] at every pixel. The target feed weights the whole map, so
the engine must pass its inputs through and read y from it without assuming a class axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ort_cam.engine import (
    FusedModel,
    PathJob,
    PathState,
    RunSizes,
    walk_fixed,
    walk_packed,
    walk_path,
)

C = np.arange(6, dtype=np.float64).reshape(2, 3) - 2.0


class MapModel:
    """The fused model above, as a Runner: run(feeds) -> [A, S, G]."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        x, w = feeds["x"], feeds["map_weights"]
        self.batches.append(len(x))
        total = x.reshape(len(x), -1).sum(axis=1)
        s = total[:, None, None] * C
        g = np.broadcast_to((w * C).sum(axis=(1, 2))[:, None, None, None], x.shape)
        return [x.copy(), s, np.ascontiguousarray(g)]


@dataclass(frozen=True)
class MapFeed:
    """Weights over the whole [2, 3] output; y = Σ w ⊙ S."""

    w: np.ndarray

    def inputs(self, n: int) -> dict[str, np.ndarray]:
        return {"map_weights": np.repeat(self.w[None], n, axis=0)}

    def score(self, out: np.ndarray) -> np.ndarray:
        return (out * self.w).sum(axis=(1, 2))


class Record:
    """A reducer that keeps what it is fed: the path indices, A and G of every chunk."""

    extra_values: dict[str, float] = {}

    def __init__(self, state: PathState):
        self.state, self.seen = state, []

    def update(self, ls, a, g) -> None:
        self.seen.append((ls.copy(), a.copy(), g.copy()))

    def finish(self) -> np.ndarray:
        ls = np.concatenate([s[0] for s in self.seen])
        assert list(ls) == list(range(self.state.m + 1)), "every point once, in order"
        return np.concatenate([s[2] for s in self.seen])  # G_l, l = 0..m


def _fused(model: MapModel) -> FusedModel:
    shapes = ((None, 1, 2, 2), (None, 2, 3), (None, 1, 2, 2))
    return FusedModel(model, "x", ("A", "S", "G"), shapes)  # type: ignore[arg-type]


def _job(seed: int) -> PathJob:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 1, 2, 2))
    return PathJob(x, np.zeros_like(x), MapFeed(rng.standard_normal((2, 3))))


def _expected(job: PathJob, m: int) -> tuple[np.ndarray, np.ndarray]:
    """y_l = (l/m) Σx · Σ w⊙c (x0 = 0), and G_l = Σ w⊙c everywhere, by hand."""
    assert isinstance(job.target, MapFeed)
    wc = float((job.target.w * C).sum())
    ys = np.arange(m + 1) / m * float(job.x.sum()) * wc
    return ys, np.full((m + 1, 1, 2, 2), wc)


def test_walk_path_feeds_and_reads_a_map_target():
    model, job, m = MapModel(), _job(0), 6
    path = walk_path(_fused(model), job, m, 4, {"rec": Record})
    ys, gs = _expected(job, m)
    # float64 throughout; 1e-12 is ~1e4 ulps over the few roundings of these sums
    np.testing.assert_allclose(path.scores_path, ys, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(path.raw["rec"], gs, rtol=1e-12, atol=0)
    assert model.batches == [4, 3]


def test_packed_paths_keep_each_jobs_own_target():
    """Two paths with different weights share one run; each gets its own y and G."""
    model, jobs, m = MapModel(), [_job(1), _job(2)], 3
    packed = walk_packed(_fused(model), jobs, m, 8, lambda: {"rec": Record})
    assert model.batches == [8]
    for job, path in zip(jobs, packed):
        ys, gs = _expected(job, m)
        np.testing.assert_allclose(path.scores_path, ys, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(path.raw["rec"], gs, rtol=1e-12, atol=0)
    alone = walk_fixed(_fused(MapModel()), jobs[:1], m, RunSizes(1, 2, fixed=2), ["rec"],
                       lambda names: {"rec": Record})
    np.testing.assert_array_equal(alone[0].raw["rec"], packed[0].raw["rec"])

