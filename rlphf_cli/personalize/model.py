"""The user model: P(A preferred to B) = sigmoid(lambda . (phi(A) - phi(B))), fitted by L2-regularised
logistic MLE (Newton), with a Laplace posterior N(lambda_hat, H^-1), and PReF's active question choice.

Coordinates: one signed strength per dimension. The two poles of a dimension are opposite ends (on the
synthetic benchmark P1A = 1 - P1B and P3A = 1 - P3B exactly), so a weight per pole is not identifiable:
only their difference is. phi_d(y) = score(first pole) - score(second pole); lambda_d > 0 leans to the
first pole (P1A, P2A, P3A), lambda_d < 0 to the second.

Rule to mixture weights (what `generate` uses): in each dimension the sign picks the pole, and the weight
of that pole is |lambda_d| / sum_e |lambda_e|.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlphf_cli.errors import UserError
from rlphf_cli.preferences import POLES, format_weight

RULE = (
    "one signed strength s_d per dimension d (P(A>B) = sigmoid(sum_d s_d (phi_d(A) - phi_d(B))), "
    "phi_d = score(first pole) - score(second pole)); the sign picks the pole (s_d >= 0: the first), "
    "its mixture weight is |s_d| / sum_e |s_e|; as weights over all poles the model is +s_d/2 on the first "
    "pole and -s_d/2 on the second (only their difference is identifiable)"
)


def two_pole_dimensions(poles) -> dict[str, tuple[str, str]]:
    """The benchmark's dimensions, each with exactly two poles (the user model's coordinates)."""
    dims: dict[str, list[str]] = {}
    for p in poles:
        dims.setdefault(POLES[p].dimension, []).append(p)
    bad = {d: ps for d, ps in dims.items() if len(ps) != 2}
    if bad:
        d, ps = next(iter(bad.items()))
        raise UserError(
            f"personalize models dimensions of exactly two poles; {d} has {', '.join(ps)} "
            "(set benchmark.poles to two poles per dimension)"
        )
    return {d: (ps[0], ps[1]) for d, ps in dims.items()}


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


@dataclass
class Posterior:
    mean: np.ndarray  # [D] signed strengths
    cov: np.ndarray  # [D, D] Laplace covariance
    n: int  # answers it was fitted on

    @classmethod
    def prior(cls, dims: int, l2: float) -> Posterior:
        return cls(np.zeros(dims), np.eye(dims) / l2, 0)


def fit(diffs: np.ndarray, choices: list[str], l2: float, iters: int = 100) -> Posterior:
    """MAP strengths from answers: diffs [n, D] = phi(A) - phi(B), choices A | B | TIE (a tie counts half
    for each side). Newton steps with step halving on the convex penalised log-likelihood."""
    x = np.asarray(diffs, dtype=float).reshape(len(choices), -1)
    dims = x.shape[1]
    if not choices:
        return Posterior.prior(dims, l2)
    rows, signs, weights = [], [], []
    for xi, c in zip(x, choices, strict=True):
        for sign, w in {"A": [(1.0, 1.0)], "B": [(-1.0, 1.0)], "TIE": [(1.0, 0.5), (-1.0, 0.5)]}[c]:
            rows.append(xi)
            signs.append(sign)
            weights.append(w)
    z = np.asarray(rows) * np.asarray(signs)[:, None]  # each row: the chosen side minus the other
    w = np.asarray(weights)

    def loss(lam):
        return float(w @ np.logaddexp(0.0, -(z @ lam)) + 0.5 * l2 * lam @ lam)

    lam = np.zeros(dims)
    for _ in range(iters):
        p = sigmoid(z @ lam)
        grad = -(z * (w * (1 - p))[:, None]).sum(0) + l2 * lam
        hess = (z * (w * p * (1 - p))[:, None]).T @ z + l2 * np.eye(dims)
        step = np.linalg.solve(hess, grad)
        t, current = 1.0, loss(lam)
        while loss(lam - t * step) > current + 1e-12 and t > 1e-6:
            t /= 2
        lam = lam - t * step
        if np.abs(t * step).max() < 1e-9:
            break
    p = sigmoid(z @ lam)
    hess = (z * (w * p * (1 - p))[:, None]).T @ z + l2 * np.eye(dims)
    return Posterior(lam, np.linalg.inv(hess), len(choices))


def uncertainty(post: Posterior, pairs: np.ndarray) -> np.ndarray:
    """PReF's criterion for each candidate pair v = phi(A) - phi(B) [m, D], as its released code computes it
    (idanshen/PReF_code `max_norm_vector` with use_derivitaive=True): sigma'(mean . v)^2 * v^T Sigma v, Sigma
    the posterior covariance (the inverse of l2 I + sum_i sigma'(mean . v_i) v_i v_i^T, PReF's M^-1 up to its
    0.001 prior). Measured against sigma' not squared and against the answer's information gain on 50 simulated
    users (`mode=simulate`): neither asked better questions, so this one is the only criterion."""
    v = np.asarray(pairs, dtype=float)
    p = sigmoid(v @ post.mean)
    return (p * (1 - p)) ** 2 * np.einsum("md,de,me->m", v, post.cov, v)


def most_uncertain(post: Posterior, pairs: np.ndarray, exclude=()) -> int:
    """Index of the candidate pair most worth asking (pairs in `exclude` are skipped)."""
    scores = uncertainty(post, pairs)
    if len(exclude):
        scores[list(exclude)] = -np.inf
    return int(np.argmax(scores))


def mixture(strengths: np.ndarray, dims: dict[str, tuple[str, str]]) -> dict[str, float]:
    """The rule: the sign picks each dimension's pole, |s_d| / sum |s| is its weight."""
    s = np.asarray(strengths, dtype=float)
    total = np.abs(s).sum()
    if total <= 0:
        raise UserError("the answers carry no information about any dimension (all strengths are zero)")
    return {
        (a if sd >= 0 else b): float(abs(sd) / total) for (a, b), sd in zip(dims.values(), s, strict=True)
    }


def summary(post: Posterior, dims: dict[str, tuple[str, str]], samples: int = 4000, seed: int = 0) -> dict:
    """What a user file holds: strengths and their sd, weights over every pole, the mixture weights with
    their sd under the Laplace posterior (a sample on the other side of zero gives the chosen pole 0), the
    probability that each dimension's pole is the right one, and the rule."""
    names = list(dims)
    sd = np.sqrt(np.diag(post.cov))
    mix = mixture(post.mean, dims)
    draws = np.random.default_rng(seed).multivariate_normal(post.mean, post.cov, size=samples)
    chosen = np.array([1.0 if s >= 0 else -1.0 for s in post.mean])
    same_side = draws * chosen > 0
    share = np.abs(draws) / np.abs(draws).sum(1, keepdims=True)
    mix_sd = np.where(same_side, share, 0.0).std(0)
    pole_weights, pole_sd = {}, {}
    for (a, b), s, e in zip(dims.values(), post.mean, sd, strict=True):
        pole_weights[a], pole_weights[b] = float(s / 2), float(-s / 2)
        pole_sd[a] = pole_sd[b] = float(e / 2)
    mixture_poles = list(mix)
    return {
        "dimensions": {d: list(p) for d, p in dims.items()},
        "strengths": {d: float(s) for d, s in zip(names, post.mean, strict=True)},
        "strength_sd": {d: float(e) for d, e in zip(names, sd, strict=True)},
        "covariance": post.cov.tolist(),
        "pole_weights": pole_weights,
        "pole_weight_sd": pole_sd,
        "mixture": mix,
        "mixture_sd": {p: float(e) for p, e in zip(mixture_poles, mix_sd, strict=True)},
        "sign_probability": {d: float(x) for d, x in zip(names, same_side.mean(0), strict=True)},
        "preference": ",".join(f"{p}:{format_weight(w)}" for p, w in mix.items()),
        "n_answers": post.n,
        "rule": RULE,
    }


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0
