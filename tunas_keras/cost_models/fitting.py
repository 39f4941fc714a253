"""Fits of a latency model to whole-network measurements: ridge over one-hot features, and the
small corrections of a per-layer table.

Every fitted model has the form `bias + Σ_b (scale_b · table_b(x) + w_b · params_b(x) + l_b ·
layers_b(x)) + residual · f(x)`: `table_b` is the summed per-layer latency of block `b` (from
micro-benchmarks), `params_b` the parameters of its layers, `layers_b` how many of its layers are
active, `f` the Pixel-1 one-hot features (cost-model.md §4). So
each is a linear model of the Pixel-1 layout and is stored as one (`layer_table.tables_to_linear`).
Candidates:

* `ridge`: no table, `scale = 0`; ridge regression over `f` (needs ~200 networks).
* `table`: `scale = 1`, `bias` = one empty-model invocation; nothing fitted.
* `affine`: `bias + s · table(x)` (two numbers).
* `block_scale`: one scale per block, shrunk towards the affine `s` by `shrink` (cross-validated).
* `block_scale_weights`: the same plus, per block, a coefficient on the parameters of its layers
  (inside a network the weights stream from memory; a layer timed alone keeps them in cache).
* `block_scale_layers`: `block_scale` plus, per block, a cost per active layer (what a layer costs
  inside a network beyond its isolated time minus the empty model's: scheduling, the buffers
  between layers); `block_scale_weights_layers`: both terms.
* `residual_ridge`: `affine` plus ridge over `f` of what it leaves.

Scales and biases minimise the relative squared error (MAPE is what is reported; the ridge over `f`
is in ms), and the correction is chosen by k-fold cross-validation on the training networks only.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
SHRINK_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
CV_FOLDS = 5
# Block-scale corrections with per-block covariates: the covariates each one uses.
COVARIATES = {
    "block_scale_weights": ("weights",),
    "block_scale_layers": ("layers",),
    "block_scale_weights_layers": ("weights", "layers"),
}
CORRECTIONS = ("affine", "block_scale", *COVARIATES, "residual_ridge")


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
    """`bias + blocks @ scales + weights @ weight_scales + layers @ layer_scales + features @ residual`.

    `blocks`: per block, the summed table latency of a network's layers (ms); `weights`: per
    block, their parameters (millions; weights stream from memory inside a network, not when a
    layer runs alone); `layers`: per block, its active layers; `features`: the one-hot features.
    Absent terms are None.
    """

    name: str
    bias: float
    scales: np.ndarray
    weight_scales: Optional[np.ndarray] = None
    residual: Optional[np.ndarray] = None
    parameter: Optional[float] = None  # shrink or l2, when the correction has one
    layer_scales: Optional[np.ndarray] = None

    def predict(self, blocks: np.ndarray, features: np.ndarray, weights=None, layers=None) -> np.ndarray:
        predicted = self.bias + blocks @ self.scales
        if self.weight_scales is not None:
            predicted = predicted + weights @ self.weight_scales
        if self.layer_scales is not None:
            predicted = predicted + layers @ self.layer_scales
        return predicted + features @ self.residual if self.residual is not None else predicted


def _weighted_lstsq(design: np.ndarray, targets: np.ndarray) -> np.ndarray:
    weights = 1.0 / targets
    return np.linalg.lstsq(design * weights[:, None], targets * weights, rcond=None)[0]


def fit_affine(blocks: np.ndarray, targets: np.ndarray) -> Correction:
    """`bias + s · Σ_b blocks_b` by relative least squares."""
    bias, scale = _weighted_lstsq(np.stack([np.ones(len(targets)), blocks.sum(axis=1)], axis=1), targets)
    return Correction("affine", float(bias), np.full(blocks.shape[1], scale))


def fit_block_scale(
    blocks: np.ndarray,
    targets: np.ndarray,
    shrink: float,
    weights: Optional[np.ndarray] = None,
    layers: Optional[np.ndarray] = None,
) -> Correction:
    """One scale per block (and a bias), with `shrink · n · Σ_b (s_b - s)^2` added, `s` the affine scale;
    with `weights` (per block: parameters) and / or `layers` (per block: active layers), also one
    coefficient per block on each, shrunk towards 0 alike.

    Blocks whose table is the same in every network (fixed layers) are not identifiable apart
    from the bias; the shrinkage keeps them at `s`.
    """
    affine = fit_affine(blocks, targets)
    count, num_blocks = blocks.shape
    present = [matrix for matrix in (weights, layers) if matrix is not None]
    columns, prior = [blocks], [affine.scales]
    # Covariates are scaled to the latencies' magnitude, so that one `shrink` suits them all.
    if present:
        covariates = np.concatenate(present, axis=1)
        unit = blocks.sum() / max(covariates.sum(), 1e-12)
        columns.append(covariates * unit)
        prior.append(np.zeros(covariates.shape[1]))
    tables, prior = np.concatenate(columns, axis=1), np.concatenate(prior)
    inverse = 1.0 / targets
    design = np.concatenate([np.ones([count, 1]), tables], axis=1) * inverse[:, None]
    penalty = np.sqrt(shrink * count) * np.concatenate([np.zeros([len(prior), 1]), np.eye(len(prior))], axis=1)
    solution = np.linalg.lstsq(
        np.concatenate([design, penalty]),
        np.concatenate([targets * inverse, np.sqrt(shrink * count) * prior]),
        rcond=None,
    )[0]
    extra = list(solution[1 + num_blocks :] * unit) if present else []
    weight_scales = np.asarray(extra[: weights.shape[1]]) if weights is not None else None
    layer_scales = np.asarray(extra[len(extra) - layers.shape[1] :]) if layers is not None else None
    name = "block_scale" + ("_weights" if weights is not None else "") + ("_layers" if layers is not None else "")
    return Correction(
        name,
        float(solution[0]),
        solution[1 : 1 + num_blocks],
        weight_scales,
        parameter=shrink,
        layer_scales=layer_scales,
    )


def fit_residual_ridge(blocks: np.ndarray, features: np.ndarray, targets: np.ndarray, l2: float) -> Correction:
    """The affine correction plus ridge over the one-hot features of what it leaves (ms)."""
    affine = fit_affine(blocks, targets)
    bias, kernel = fit_ridge(features, targets - affine.predict(blocks, features), l2)
    return Correction("residual_ridge", affine.bias + bias, affine.scales, residual=kernel, parameter=l2)


def _covariates(name: str, weights, layers) -> dict:
    """The per-block covariates a block-scale correction `name` uses (`COVARIATES`)."""
    given = {"weights": weights, "layers": layers}
    return {key: given[key] for key in COVARIATES.get(name, ())}


def fit_correction(name: str, blocks, features, targets, parameter: Optional[float], weights=None, layers=None):
    if name == "affine":
        return fit_affine(blocks, targets)
    if name == "block_scale" or name in COVARIATES:
        return fit_block_scale(blocks, targets, parameter, **_covariates(name, weights, layers))
    if name == "residual_ridge":
        return fit_residual_ridge(blocks, features, targets, parameter)
    raise ValueError(f"Invalid value for argument `correction`. Expected one of {CORRECTIONS}. Received: {name!r}")


def _fold_corrections(blocks, features, targets, names, weights=None, layers=None) -> dict:
    """Every candidate `(name, parameter)` fitted on one training split (one SVD for all `l2`)."""
    affine = fit_affine(blocks, targets)
    fitted = {("affine", None): affine}
    for shrink in SHRINK_GRID:
        for name in ("block_scale", *COVARIATES):
            if name in names:
                fitted[(name, shrink)] = fit_block_scale(blocks, targets, shrink, **_covariates(name, weights, layers))
    if "residual_ridge" in names:
        residual = targets - affine.predict(blocks, features)
        for l2, (bias, kernel) in zip(L2_GRID, _ridge_path(features, residual, L2_GRID)):
            fitted[("residual_ridge", l2)] = Correction(
                "residual_ridge", affine.bias + bias, affine.scales, residual=kernel, parameter=l2
            )
    return {key: value for key, value in fitted.items() if key[0] in names}


def choose_correction(
    blocks, features, targets, names=CORRECTIONS, folds: int = CV_FOLDS, seed: int = 0, weights=None, layers=None
):
    """The correction (and its shrink / l2) with the lowest k-fold cross-validated MAPE.

    Args:
      blocks / features / targets: per training network, its per-block table latencies, one-hot
        features and measured latency.
      names: the candidates (`CORRECTIONS`); those of `COVARIATES` need their covariates.
      weights: per network and block, the parameters (millions), or None.
      layers: per network and block, the active layers, or None.

    Returns:
      `(correction fitted on all samples, {"name(parameter)": cross-validated MAPE %})`.
    """
    blocks, features = np.asarray(blocks, np.float64), np.asarray(features, np.float64)
    targets = np.asarray(targets, np.float64)
    given = {"weights": weights, "layers": layers}
    names = [name for name in names if all(given[key] is not None for key in COVARIATES.get(name, ()))]
    assignment = _folds(len(targets), folds, seed)
    errors: dict = {}

    def rows(matrix, selected):
        return None if matrix is None else matrix[selected]

    for fold in np.unique(assignment):
        test = assignment == fold
        candidates = _fold_corrections(
            blocks[~test], features[~test], targets[~test], names, rows(weights, ~test), rows(layers, ~test)
        )
        for key, fitted in candidates.items():
            predicted = fitted.predict(blocks[test], features[test], rows(weights, test), rows(layers, test))
            errors.setdefault(key, []).append(np.abs(predicted - targets[test]) / targets[test])
    scores = {key: float(np.mean(np.concatenate(values)) * 100) for key, values in errors.items()}
    name, parameter = min(scores, key=scores.get)
    labels = {f"{key[0]}({key[1]:g})" if key[1] is not None else key[0]: value for key, value in scores.items()}
    return fit_correction(name, blocks, features, targets, parameter, weights, layers), labels
