"""Fits of a latency model to whole-network measurements: ridge over one-hot features, and the
small corrections of a per-layer table.

Every fitted model has the form `bias + Σ_b scale_b · table_b(x) + residual · f(x)`: `table_b`
is the summed per-layer latency of block `b` (from micro-benchmarks), `f` the Pixel-1 one-hot
features (cost-model.md §4). So each is a linear model of the Pixel-1 layout and is stored as
one (`layer_table.tables_to_linear`). Candidates:

* `ridge`: no table, `scale = 0`; ridge regression over `f` (needs ~200 networks).
* `table`: `scale = 1`, `bias` = one empty-model invocation; nothing fitted.
* `affine`: `bias + s · table(x)` (two numbers).
* `block_scale`: one scale per block, shrunk towards the affine `s` by `shrink` (cross-validated).
* `residual_ridge`: `affine` plus ridge over `f` of what it leaves.

Scales and biases minimise the relative squared error (MAPE is what is reported; the ridge over `f`
is in ms), and the correction is chosen by k-fold cross-validation on the training networks only.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
SHRINK_GRID = (1e-3, 1e-2, 1e-1, 1.0)
CV_FOLDS = 5
CORRECTIONS = ("affine", "block_scale", "residual_ridge")


def _ridge_path(feature_matrix, targets, l2_values) -> list[tuple[float, np.ndarray]]:
    """`(bias, kernel)` minimising `mean((y - b - X w)^2) + l2 * |w|^2` for each `l2` (bias unregularised).

    One thin SVD of the centred features serves every `l2`, with as many features as samples or
    more (the larger spaces have 5983 / 29068 features). Features constant over the samples (never
    or always active) get weight exactly 0: the bias carries them.
    """
    matrix, targets = np.asarray(feature_matrix, np.float64), np.asarray(targets, np.float64)
    mean_features, mean_target = matrix.mean(axis=0), targets.mean()
    left, singular, right_t = _thin_svd(matrix - mean_features)
    projected, constant = left.T @ (targets - mean_target), np.ptp(matrix, axis=0) == 0
    solutions = []
    for l2 in l2_values:
        kernel = right_t @ (singular / (singular**2 + l2 * len(targets)) * projected)
        kernel[constant] = 0.0
        solutions.append((float(mean_target - mean_features @ kernel), kernel))
    return solutions


def _thin_svd(centered: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(U, s, V)` with `centered = U diag(s) Vᵀ`, zero singular values dropped.

    With far fewer rows than columns (60 networks, 29068 features) the eigenvectors of the small
    Gram matrix `centered centeredᵀ` give it two orders of magnitude faster than a full SVD.
    """
    rows, columns = centered.shape
    if rows >= columns:
        left, singular, right = np.linalg.svd(centered, full_matrices=False)
        return left, singular, right.T
    eigenvalues, left = np.linalg.eigh(centered @ centered.T)
    keep = eigenvalues > max(eigenvalues.max(initial=0.0), 0.0) * rows * np.finfo(np.float64).eps
    singular = np.sqrt(eigenvalues[keep])
    left = left[:, keep]
    return left, singular, (centered.T @ left) / singular


def fit_ridge(feature_matrix, targets, l2: float) -> tuple[float, np.ndarray]:
    """Ridge regression with an unregularised bias: `(bias, kernel)` (see `_ridge_path`)."""
    return _ridge_path(feature_matrix, targets, [l2])[0]


def _folds(count: int, folds: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(count) % min(folds, count)


def choose_l2(feature_matrix, targets, grid=L2_GRID, folds: int = CV_FOLDS, seed: int = 0) -> tuple[float, dict]:
    """The `l2` of `grid` with the lowest k-fold cross-validated MAPE, and every value's MAPE (%)."""
    matrix, targets = np.asarray(feature_matrix, np.float64), np.asarray(targets, np.float64)
    assignment = _folds(len(targets), folds, seed)
    errors = {l2: [] for l2 in grid}
    for fold in np.unique(assignment):
        test = assignment == fold
        for l2, (bias, kernel) in zip(grid, _ridge_path(matrix[~test], targets[~test], grid)):
            errors[l2].append(np.abs(bias + matrix[test] @ kernel - targets[test]) / targets[test])
    scores = {l2: float(np.mean(np.concatenate(values)) * 100) for l2, values in errors.items()}
    return min(grid, key=scores.get), scores


@dataclasses.dataclass
class Correction:
    """`bias + blocks @ scales + features @ residual` (residual None: no feature term)."""

    name: str
    bias: float
    scales: np.ndarray
    residual: Optional[np.ndarray] = None
    parameter: Optional[float] = None  # shrink or l2, when the correction has one

    def predict(self, blocks: np.ndarray, features: np.ndarray) -> np.ndarray:
        predicted = self.bias + blocks @ self.scales
        return predicted + features @ self.residual if self.residual is not None else predicted


def _weighted_lstsq(design: np.ndarray, targets: np.ndarray) -> np.ndarray:
    weights = 1.0 / targets
    return np.linalg.lstsq(design * weights[:, None], targets * weights, rcond=None)[0]


def fit_affine(blocks: np.ndarray, targets: np.ndarray) -> Correction:
    """`bias + s · Σ_b blocks_b` by relative least squares."""
    bias, scale = _weighted_lstsq(np.stack([np.ones(len(targets)), blocks.sum(axis=1)], axis=1), targets)
    return Correction("affine", float(bias), np.full(blocks.shape[1], scale))


def fit_block_scale(blocks: np.ndarray, targets: np.ndarray, shrink: float) -> Correction:
    """One scale per block (and a bias), with `shrink · n · Σ_b (s_b - s)^2` added, `s` the affine scale.

    Blocks whose table is the same in every network (fixed layers) are not identifiable apart
    from the bias; the shrinkage keeps them at `s`.
    """
    affine = fit_affine(blocks, targets)
    count, num_blocks = blocks.shape
    weights = 1.0 / targets
    design = np.concatenate([np.ones([count, 1]), blocks], axis=1) * weights[:, None]
    penalty = np.sqrt(shrink * count) * np.concatenate([np.zeros([num_blocks, 1]), np.eye(num_blocks)], axis=1)
    solution = np.linalg.lstsq(np.concatenate([design, penalty]),
                               np.concatenate([targets * weights, np.sqrt(shrink * count) * affine.scales]),
                               rcond=None)[0]
    return Correction("block_scale", float(solution[0]), solution[1:], parameter=shrink)


def fit_residual_ridge(blocks: np.ndarray, features: np.ndarray, targets: np.ndarray, l2: float) -> Correction:
    """The affine correction plus ridge over the one-hot features of what it leaves (ms)."""
    affine = fit_affine(blocks, targets)
    bias, kernel = fit_ridge(features, targets - affine.predict(blocks, features), l2)
    return Correction("residual_ridge", affine.bias + bias, affine.scales, kernel, parameter=l2)


def fit_correction(name: str, blocks, features, targets, parameter: Optional[float]) -> Correction:
    if name == "affine":
        return fit_affine(blocks, targets)
    if name == "block_scale":
        return fit_block_scale(blocks, targets, parameter)
    if name == "residual_ridge":
        return fit_residual_ridge(blocks, features, targets, parameter)
    raise ValueError(f"Invalid value for argument `correction`. Expected one of {CORRECTIONS}. Received: {name!r}")


def _fold_corrections(blocks, features, targets, names) -> dict:
    """Every candidate `(name, parameter)` fitted on one training split (one SVD for all `l2`)."""
    fitted = {}
    if "affine" in names or "residual_ridge" in names:
        affine = fit_affine(blocks, targets)
        fitted[("affine", None)] = affine
    if "block_scale" in names:
        for shrink in SHRINK_GRID:
            fitted[("block_scale", shrink)] = fit_block_scale(blocks, targets, shrink)
    if "residual_ridge" in names:
        residual = targets - affine.predict(blocks, features)
        for l2, (bias, kernel) in zip(L2_GRID, _ridge_path(features, residual, L2_GRID)):
            fitted[("residual_ridge", l2)] = Correction("residual_ridge", affine.bias + bias, affine.scales, kernel,
                                                        parameter=l2)
    return {key: value for key, value in fitted.items() if key[0] in names}


def choose_correction(blocks, features, targets, names=CORRECTIONS, folds: int = CV_FOLDS, seed: int = 0):
    """The correction (and its shrink / l2) with the lowest k-fold cross-validated MAPE.

    Returns:
      `(correction fitted on all samples, {"name(parameter)": cross-validated MAPE %})`.
    """
    blocks, features = np.asarray(blocks, np.float64), np.asarray(features, np.float64)
    targets = np.asarray(targets, np.float64)
    assignment = _folds(len(targets), folds, seed)
    errors: dict = {}
    for fold in np.unique(assignment):
        test = assignment == fold
        for key, fitted in _fold_corrections(blocks[~test], features[~test], targets[~test], names).items():
            error = np.abs(fitted.predict(blocks[test], features[test]) - targets[test]) / targets[test]
            errors.setdefault(key, []).append(error)
    scores = {key: float(np.mean(np.concatenate(values)) * 100) for key, values in errors.items()}
    name, parameter = min(scores, key=scores.get)
    labels = {f"{key[0]}({key[1]:g})" if key[1] is not None else key[0]: value for key, value in scores.items()}
    return fit_correction(name, blocks, features, targets, parameter), labels
