"""An exact oracle: a Gaussian mixture whose components stay Gaussian under x_t = s(t)x₀ + σ(t)ε (Song et al. 2021,
eq. 29), N(μ_k, Σ_k) → N(sμ_k, s²Σ_k + σ²I), so its density, score, time-t classifier and linear-Gaussian posteriors
are closed forms. Computed in float64, returned in the input's dtype."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .checks import ArgumentError
from .scipy_ode import Solver, solve
from .sde import SDE, ScoreFn


class GaussianMixture:
    """p(x) = Σ_k w_k N(x; μ_k, Σ_k) with full covariances."""

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.covs = torch.as_tensor(covs, dtype=torch.float64)
        k, d = self.means.shape
        if self.weights.shape != (k,) or self.covs.shape != (k, d, d):
            raise ValueError(
                f"shapes disagree: weights {tuple(self.weights.shape)}, means {tuple(self.means.shape)}, "
                f"covs {tuple(self.covs.shape)}; expected (K,), (K, D), (K, D, D)"
            )
        if not bool((self.weights > 0).all()) or abs(float(self.weights.sum()) - 1) > 1e-9:
            raise ArgumentError("weights", self.weights.tolist(), "positive and summing to 1")
        self._eigvals, self._eigvecs = torch.linalg.eigh(self.covs)
        if not bool((self._eigvals > 0).all()):
            raise ArgumentError(
                "covs", f"eigenvalues down to {float(self._eigvals.min()):.3g}", "symmetric positive definite"
            )

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws, float64, shape (n, D)."""
        return self.sample_with_labels(n, generator)[0]

    def sample_with_labels(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n draws x (float64, (n, D)) with the component k ~ w each was drawn from ((n,), long): its class."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        root = self._eigvecs * self._eigvals.sqrt().unsqueeze(-2)  # U √Λ
        return self.means[k] + torch.einsum("nij,nj->ni", root[k], z), k

    def _diffused(self, x: Tensor, s: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """Per-component log w_k N(x; sμ_k, s²Σ_k + σ²I) and the precision-weighted residual C_k⁻¹(x − sμ_k).

        With Σ_k = U_k diag(λ_k) U_kᵀ, C_k = U_k diag(s²λ_k + σ²) U_kᵀ: inverse and log-determinant cost one projection.
        """
        x = x.to(torch.float64)
        weights, means, eigvals, eigvecs = (
            p.to(x.device) for p in (self.weights, self.means, self._eigvals, self._eigvecs)
        )
        s, sigma = s.to(x).reshape(-1, 1, 1), sigma.to(x).reshape(-1, 1, 1)
        var = s**2 * eigvals + sigma**2  # (B, K, D): eigenvalues of C_k(t)
        y = torch.einsum("kdj,bkd->bkj", eigvecs, x[:, None, :] - s * means)  # U_kᵀ(x − sμ_k)
        log_n = -0.5 * ((y**2 / var).sum(-1) + var.log().sum(-1) + self.dim * math.log(2 * math.pi))
        residual = torch.einsum("kdj,bkj->bkd", eigvecs, y / var)
        return weights.log() + log_n, residual

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x), shape (batch,)."""
        one = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
        log_wn, _ = self._diffused(x, one, torch.zeros_like(one))
        return torch.logsumexp(log_wn, -1).to(x.dtype)

    def marginal(self, sde: SDE, t: float) -> GaussianMixture:
        """p_t, the mixture diffused by `sde` to time t: components N(s μ_k, s²Σ_k + σ²I)."""
        tt = torch.tensor([t], dtype=torch.float64)
        s, sigma = float(sde.scale(tt)), float(sde.sigma(tt))
        eye = torch.eye(self.dim, dtype=torch.float64)
        return GaussianMixture(self.weights, s * self.means, s**2 * self.covs + sigma**2 * eye)

    def score_fn(self, sde: SDE) -> ScoreFn:
        """The exact score ∇_x log p_t(x) = −Σ_k r_k(x) C_k(t)⁻¹(x − s μ_k), r_k the responsibilities."""

        def score(x: Tensor, t: Tensor) -> Tensor:
            t = t.to(torch.float64).expand(x.shape[0])
            log_wn, residual = self._diffused(x, sde.scale(t), sde.sigma(t))
            r = torch.softmax(log_wn, -1)
            return -(r.unsqueeze(-1) * residual).sum(1).to(x.dtype)

        return score

    def responsibilities(self, x: Tensor) -> Tensor:
        """r_k(x) = p(k | x), shape (batch, K)."""
        one = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
        log_wn, _ = self._diffused(x, one, torch.zeros_like(one))
        return torch.softmax(log_wn, -1)

    @property
    def mean(self) -> Tensor:
        """E[x] = Σ_k w_k μ_k, shape (D,)."""
        return self.weights @ self.means

    @property
    def covariance(self) -> Tensor:
        """Cov[x] = Σ_k w_k (Σ_k + (μ_k − E[x])(μ_k − E[x])ᵀ), the law of total covariance; shape (D, D)."""
        d = self.means - self.mean
        return torch.einsum("k,kij->ij", self.weights, self.covs + d[:, :, None] * d[:, None, :])

    def _components(self, k: int | Sequence[int]) -> list[int]:
        """The component indices of a class: one index or a sequence of distinct ones."""
        idx = [k] if isinstance(k, int) else list(k)
        n = len(self.weights)
        if not idx or len(set(idx)) < len(idx) or not all(isinstance(i, int) and 0 <= i < n for i in idx):
            raise ArgumentError("class", k, f"a component index or distinct indices in [0, {n})")
        return idx

    def given_class(self, k: int | Sequence[int]) -> GaussianMixture:
        """p(x | y) for the class y made of component(s) k: those components, with their weights renormalised."""
        idx = self._components(k)
        w = self.weights[idx]
        return GaussianMixture(w / w.sum(), self.means[idx], self.covs[idx])

    def classifier_log_prob(
        self, sde: SDE, x: Tensor, t: Tensor, classes: Sequence[int | Sequence[int]] | None = None
    ) -> Tensor:
        """The exact time-t classifier log p_t(y | x), shape (batch, C): the log responsibilities of the K
        components under the diffused mixture p_t (C = K), or with `classes` (C entries, each a component index or
        a sequence of them) the logsumexp over each class's components.

        Differentiable in x: ∇ₓ log p_t(y | x) + ∇ₓ log p_t(x) = ∇ₓ log p_t(x | y), the class-conditional score
        (Bayes' rule; Song et al. 2021, eq. 14) of `given_class(y).score_fn(sde)`.
        """
        t = t.to(torch.float64).expand(x.shape[0])
        log_wn, _ = self._diffused(x, sde.scale(t), sde.sigma(t))
        log_r = torch.log_softmax(log_wn, -1)
        if classes is not None:
            log_r = torch.stack([torch.logsumexp(log_r[:, self._components(c)], -1) for c in classes], -1)
        return log_r.to(x.dtype)

    def _condition(self, A: Tensor, y: Tensor, noise_var: float) -> tuple[Tensor, Tensor, Tensor]:
        """Every component conditioned on y = Ax + n, n ~ N(0, noise_var·I) (Gaussian conditioning, Bishop 2006,
        §2.3.3): log w_k N(y; Aμ_k, S_k) with S_k = AΣ_kAᵀ + noise_var·I, the means μ_k + K_k(y − Aμ_k) and the
        covariances (I − K_kA)Σ_k(I − K_kA)ᵀ + noise_var·K_kK_kᵀ (Joseph's form: symmetric positive semi-definite
        by construction), with the gain K_k = Σ_kAᵀS_k⁻¹. S_k is used only through its Cholesky factor."""
        m, d = A.shape
        a_sigma = A @ self.covs  # AΣ_k, (K, m, D)
        chol, info = torch.linalg.cholesky_ex(a_sigma @ A.T + noise_var * torch.eye(m, dtype=torch.float64))
        if bool(info.any()):
            raise ValueError("A Σ_k Aᵀ + noise_std² I is singular: with noise_std = 0, A must have full row rank")
        r = y - self.means @ A.T  # y − Aμ_k, (K, m)
        z = torch.linalg.solve_triangular(chol, r[..., None], upper=False)[..., 0]
        log_n = -0.5 * (z.square().sum(-1) + m * math.log(2 * math.pi)) - chol.diagonal(0, -2, -1).log().sum(-1)
        gain = torch.cholesky_solve(a_sigma, chol).transpose(1, 2)  # Σ_kAᵀS_k⁻¹, (K, D, m)
        means = self.means + (gain @ r[..., None])[..., 0]
        b = torch.eye(d, dtype=torch.float64) - gain @ A
        covs = b @ self.covs @ b.transpose(1, 2) + noise_var * gain @ gain.transpose(1, 2)
        return self.weights.log() + log_n, means, 0.5 * (covs + covs.transpose(1, 2))

    @staticmethod
    def _reweighted(log_w: Tensor, means: Tensor, covs: Tensor) -> GaussianMixture:
        """The mixture with weights softmax(log_w); components whose weight underflows to 0 in float64 are dropped."""
        w = torch.softmax(log_w, 0)
        keep = w > 0
        return GaussianMixture(w[keep] / w[keep].sum(), means[keep], covs[keep])

    def posterior(self, A: Tensor, y: Tensor, noise_std: float) -> GaussianMixture:
        """p(x | y) for the measurement y = Ax + noise_std·n, n ~ N(0, I), over all D coordinates: the components
        reweighted by N(y; Aμ_k, AΣ_kAᵀ + noise_std²I) and conditioned on y (`_condition`). A: (m, D), y: (m,).

        noise_std must be > 0: given exact measurements the posterior is singular on the measured directions; for a
        coordinate mask with noise_std = 0, `inpainting_posterior` gives the posterior of the missing coordinates.
        The covariances have eigenvalues down to about noise_std², so noise_std ≪ 1e-7·‖Σ_k‖^½ loses them to
        rounding. Components whose weight underflows to 0 are dropped, so indices need not match this mixture's.
        """
        A, y = torch.as_tensor(A, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
        if A.ndim != 2 or A.shape[1] != self.dim or y.shape != A.shape[:1]:
            raise ValueError(f"A must be (m, D={self.dim}) and y (m,), got A {tuple(A.shape)} and y {tuple(y.shape)}")
        if not (math.isfinite(noise_std) and noise_std > 0):
            raise ArgumentError("noise_std", noise_std, "finite and > 0 (use inpainting_posterior for 0)")
        return self._reweighted(*self._condition(A, y, noise_std**2))

    def inpainting_posterior(self, mask: Tensor, y_obs: Tensor) -> GaussianMixture:
        """p(x_u | x_o = y_obs) for exact observations of the coordinates o where the boolean `mask` (D,) is True:
        a mixture over the missing coordinates u = ~mask only (in their order), whose components are reweighted by
        N(y_obs; μ_k,o, Σ_k,oo), with means μ_k,u + Σ_k,uoΣ_k,oo⁻¹(y_obs − μ_k,o) and covariances
        Σ_k,uu − Σ_k,uoΣ_k,oo⁻¹Σ_k,ou. A full posterior draw x has x[mask] = y_obs and x[~mask] from this mixture.
        Components whose weight underflows to 0 are dropped.
        """
        mask, y_obs = torch.as_tensor(mask), torch.as_tensor(y_obs, dtype=torch.float64)
        if mask.dtype != torch.bool or mask.shape != (self.dim,) or bool(mask.all()) or not bool(mask.any()):
            raise ValueError(
                f"mask must be a bool tensor of shape (D={self.dim},) with observed (True) and missing (False) "
                f"coordinates, got dtype {mask.dtype}, shape {tuple(mask.shape)}, {int(mask.sum())} True"
            )
        if y_obs.shape != (int(mask.sum()),):
            raise ArgumentError(
                "y_obs", tuple(y_obs.shape), "of shape (observed coordinates,): one value per observed coordinate"
            )
        log_w, means, covs = self._condition(torch.eye(self.dim, dtype=torch.float64)[mask], y_obs, 0.0)
        u = ~mask
        return self._reweighted(log_w, means[:, u], covs[:, u][:, :, u])


def eight_gaussians(radius: float = 4.0, std: float = 0.15) -> GaussianMixture:
    """Eight equal-weight isotropic Gaussians on a circle: the standard 2-D toy set."""
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    means = radius * torch.stack([angles.cos(), angles.sin()], 1)
    covs = std**2 * torch.eye(2, dtype=torch.float64).expand(8, 2, 2)
    return GaussianMixture(torch.full((8,), 1 / 8, dtype=torch.float64), means, covs)


def mixture(dim: int = 16, k: int = 10, seed: int = 0) -> GaussianMixture:
    """A seeded random mixture with anisotropic covariances (eigenvalues log-uniform in [0.01, 1])."""
    g = torch.Generator().manual_seed(seed)
    weights = torch.rand(k, generator=g, dtype=torch.float64) + 0.5
    means = 3.0 * torch.randn(k, dim, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(k, dim, dim, generator=g, dtype=torch.float64))
    eig = torch.exp(torch.empty(k, dim, dtype=torch.float64).uniform_(math.log(0.01), 0.0, generator=g))
    covs = q @ torch.diag_embed(eig) @ q.transpose(1, 2)
    return GaussianMixture(weights / weights.sum(), means, 0.5 * (covs + covs.transpose(1, 2)))


def _noised_draws(sde: SDE, oracle: GaussianMixture, n: int, t_min: float, generator: torch.Generator | None):
    """t ~ U(t_min, T) and x_t = s(t)x₀ + σ(t)ε with x₀ ~ the oracle, n draws in float64 (t, then ε, from `generator`:
    the default objective's draws)."""
    x0 = oracle.sample(n, generator=generator)
    t = t_min + (sde.T - t_min) * torch.rand(n, generator=generator, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    return t, sde.perturb(x0, t, noise)


def eps_error(
    sde: SDE,
    score_fn: ScoreFn,
    oracle: GaussianMixture,
    n: int = 20_000,
    t_min: float = 1e-5,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> float:
    """The ε-prediction RMS error (E‖ε̂ − ε̂*‖²/D)^½ = (E‖σ(t)(s(x_t, t) − s*(x_t, t))‖²/D)^½ of `score_fn` against
    the oracle's exact score s*, over n draws t ~ U(t_min, T), x_t ~ p_t; score_fn is called in `dtype` on `device`.

    Its square is the excess of the "simple" DSM loss (objectives.Objective's default, same t_min) over the exact
    score's, as ε̂* = E[ε | x_t] makes the cross term vanish: so a trained model's value can be read off its loss too.
    """
    t, x = _noised_draws(sde, oracle, n, t_min, generator)
    s = score_fn(x.to(dtype=dtype, device=device), t.to(dtype=dtype, device=device)).to("cpu", torch.float64)
    diff = sde.sigma(t)[:, None] * (s - oracle.score_fn(sde)(x, t))
    return float(diff.square().mean().sqrt())


class PerturbedScore:
    """The exact score s* of `oracle` with a controlled error in its ε-prediction ε̂ = −σ(t)·s (Ho et al. 2020):
    a stand-in for a trained network whose error is known.

      kind "scale": ε̂ = (1 + size)·ε̂*, i.e. s = (1 + size)·s*: a network that over- (size > 0) or under-shoots (−1 <
        size < 0) its ε; its ε-RMS error is |size|·RMS(ε̂*), with RMS(ε̂*) < 1.
      kind "bias": ε̂ = ε̂* + size·b(x, t), i.e. s = s* − size·b/σ(t), with b a fixed smooth random field: random
        Fourier features (Rahimi & Recht 2007) b_d = c Σ_f u_df cos(ω_fᵀx̃ + ν_f t/T + φ_f) of the standardised
        x̃ = x/(s(t)² + σ(t)²)^½, ω_f ~ N(0, I/length_scale²), ν_f ~ N(0, (2π)²), φ_f ~ U[0, 2π), u_d uniform on
        the unit sphere, all drawn from `seed`; c makes b of unit RMS over t ~ U(1e-5, T), x_t ~ p_t (estimated on
        2¹⁴ seeded draws), so its ε-RMS error (`eps_error`) is |size|.

    `size` is a number or a name from SIZES: "small" ≈ the ε-RMS error of the default MLP (3×128) trained for the
    default 4000 steps, "large" ≈ one trained for 500 (docs/samplers.md). Returned in x's dtype; computed in float64.
    """

    KINDS = ("scale", "bias")
    SIZES = {"small": 0.05, "large": 0.25}
    FEATURES = 256

    def __init__(
        self,
        oracle: GaussianMixture,
        sde: SDE,
        kind: str = "bias",
        size: float | str = "small",
        seed: int = 0,
        length_scale: float = 1.0,
    ):
        if kind not in self.KINDS:
            raise ArgumentError("kind", kind, f"one of {self.KINDS}")
        size = self.SIZES.get(size, size) if isinstance(size, str) else size
        if isinstance(size, str) or not math.isfinite(size) or (kind == "scale" and size <= -1):
            raise ValueError(
                f"size must be one of {tuple(self.SIZES)} or a finite number (> −1 for scale), got {size!r}"
            )
        if not length_scale > 0:
            raise ArgumentError("length_scale", length_scale, "> 0")
        self.oracle, self.sde, self.kind, self.size = oracle, sde, kind, float(size)
        self._score = oracle.score_fn(sde)
        g = torch.Generator().manual_seed(seed)
        f, d = self.FEATURES, oracle.dim
        self._omega = torch.randn(f, d, generator=g, dtype=torch.float64) / length_scale
        self._nu = 2 * math.pi * torch.randn(f, generator=g, dtype=torch.float64)
        self._phi = 2 * math.pi * torch.rand(f, generator=g, dtype=torch.float64)
        u = torch.randn(d, f, generator=g, dtype=torch.float64)
        self._u = u / u.norm(dim=1, keepdim=True)
        t, x = _noised_draws(sde, oracle, 2**14, 1e-5, g)
        self._u = self._u / self.bias(x, t).square().mean().sqrt()

    def bias(self, x: Tensor, t: Tensor) -> Tensor:
        """The unit-RMS field b(x, t), shape (batch, D), float64."""
        x = x.to(torch.float64)
        t = t.to(x).expand(x.shape[0])
        x_std = x / (self.sde.scale(t).square() + self.sde.sigma(t).square()).sqrt()[:, None]
        omega, nu, phi, u = (p.to(x.device) for p in (self._omega, self._nu, self._phi, self._u))
        return torch.cos(x_std @ omega.T + (t / self.sde.T)[:, None] * nu + phi) @ u.T

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        s = self._score(x, t).to(torch.float64)
        if self.kind == "scale":
            return ((1 + self.size) * s).to(x.dtype)
        sigma = self.sde.sigma(t.to(s).expand(x.shape[0]))[:, None]
        return (s - self.size * self.bias(x, t) / sigma).to(x.dtype)


def exact_flow_map(
    sde: SDE,
    mixture: GaussianMixture,
    x_T: Tensor,
    t_min: float,
    rtol: float = 1e-10,
    atol: float = 1e-10,
    denoise: bool = False,
    T: float | None = None,
) -> Tensor:
    """x_T carried from T (the SDE's, or the start time given) to t_min by the probability-flow ODE (Song et al. 2021,
    eq. 13) of the exact mixture score.

    Solved in float64 by DOP853 to `rtol`/`atol` (on the CPU, through `scipy_ode.solve`); with `denoise` also
    Tweedie's step at t_min, to pair with samplers run with denoise=True. Returned in x_T's dtype and device.
    """
    score = mixture.score_fn(sde)
    x = x_T.detach().flatten(1).to(device="cpu", dtype=torch.float64)

    def drift(y: Tensor, t: float) -> Tensor:
        tt = torch.full((y.shape[0],), t, dtype=torch.float64)
        return sde.reverse_drift(y, tt, score(y, tt), probability_flow=True)

    x, _ = solve(drift, x, sde.T if T is None else T, t_min, Solver("DOP853", rtol, atol), desc="exact_flow_map")
    if denoise:
        te = torch.full((x.shape[0],), t_min, dtype=torch.float64)
        x = sde.tweedie(x, te, score(x, te))
    return x.to(dtype=x_T.dtype, device=x_T.device).view(x_T.shape)
