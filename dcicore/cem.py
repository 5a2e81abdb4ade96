"""The cross-entropy method (CEM) of Sec 4.1, as an ask/tell loop with explicit state.

Explained in the book's chapter "CERL: evolution meets Q-learning"; used by :mod:`dcicore.cerl`.

The search distribution over flat parameter vectors z ∈ R^P is a Gaussian N(μ, Σ). One
generation is::

    state = init(mean, var)                          # μ_0, diag Σ_0
    z = ask(state, k, rng)                           # (k, P) samples ~ N(μ, Σ)
    f = fitness(z)                                   # (k,), *maximised*
    state = tell(state, z, f, elite_weights(k // 2), eps)   # Eq 15

**Fitness is maximised**: ``tell`` ranks the samples by decreasing fitness, and the first
``len(weights)`` of them are the elites z_1..z_μ. (CERL's fitness is the negative TD error of
Eq 14, so "higher is better" holds there too.)

**Σ is diagonal.** A GCN Q-network has P ≈ 10^5 parameters; a full covariance would hold
P² ≈ 10^10 numbers (40 GB in float32) and could not be estimated from k = 50 samples anyway
(its rank is at most μ). Like CEM-RL and VEB-RL we keep only the diagonal of Eq 15, so Σ is a
vector ``var`` of shape (P,), sampling costs O(kP), and ``ε·I`` adds ε to every variance.

Everything is PyTorch: ``mean``/``var`` are 1-D tensors, samples are (k, P) tensors of the
same dtype and device, and randomness comes only from the ``torch.Generator`` passed to
:func:`ask` (so a run can be checkpointed and resumed exactly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["CEMState", "init", "ask", "tell", "elite_weights", "damping"]


@dataclass(frozen=True)
class CEMState:
    """State of the search distribution N(μ, diag Σ).

    Attributes
    ----------
    mean : torch.Tensor, shape (P,)
        μ, the mean parameter vector.
    var : torch.Tensor, shape (P,)
        The diagonal of Σ (variances, not standard deviations).
    generation : int
        How many times :func:`tell` has updated the distribution.
    """

    mean: torch.Tensor
    var: torch.Tensor
    generation: int = 0

    @property
    def num_params(self) -> int:
        """P, the length of the parameter vector."""
        return int(self.mean.numel())

    def state_dict(self) -> dict:
        """Tensors and ints only (loadable with ``torch.load(weights_only=True)``)."""
        return {"mean": self.mean.clone(), "var": self.var.clone(), "generation": int(self.generation)}

    @classmethod
    def from_state_dict(cls, d: dict) -> "CEMState":
        return cls(mean=d["mean"].clone(), var=d["var"].clone(), generation=int(d["generation"]))


def init(mean: torch.Tensor, var) -> CEMState:
    """μ_0 = ``mean`` (flattened, copied) and Σ_0 = diag(``var``).

    ``var`` may be a scalar (the same initial variance for every parameter; CEM-RL and VEB-RL
    use 1e-3) or a tensor of shape (P,). Raises ``ValueError`` unless every variance is > 0.
    """
    mean = torch.as_tensor(mean).detach().reshape(-1).clone()
    if not torch.is_floating_point(mean):
        mean = mean.to(torch.get_default_dtype())
    var_t = torch.as_tensor(var, dtype=mean.dtype, device=mean.device)
    if var_t.ndim == 0:
        var_t = torch.full_like(mean, float(var_t))
    var_t = var_t.reshape(-1).clone()
    if var_t.shape != mean.shape:
        raise ValueError(f"var must be a scalar or have shape {tuple(mean.shape)}, got {tuple(var_t.shape)}")
    if not bool(torch.all(var_t > 0)) or not bool(torch.all(torch.isfinite(var_t))):
        raise ValueError("var must be finite and > 0 for every parameter")
    return CEMState(mean=mean, var=var_t, generation=0)


def ask(state: CEMState, k: int, rng: torch.Generator) -> torch.Tensor:
    """Draw ``k`` parameter vectors z_i ~ N(μ, diag Σ); returns a (k, P) tensor.

    Only ``rng`` is used for randomness (the generator must live on ``state.mean``'s device).
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer in [1, inf), got {k!r}")
    noise = torch.randn((k, state.num_params), generator=rng, dtype=state.mean.dtype,
                        device=state.mean.device)  # (k, P)
    return state.mean + noise * state.var.sqrt()


def elite_weights(num_elites: int, kind: str = "log", dtype=torch.float64) -> torch.Tensor:
    """λ_1..λ_μ of Eq 15 for μ = ``num_elites`` elites, sorted best first, summing to 1.

    ``"log"``: λ_i ∝ log((μ + 1) / i) (CMA-ES / CEM-RL / VEB-RL: the best elite weighs most);
    ``"equal"``: λ_i = 1/μ (the textbook CEM).
    """
    if not isinstance(num_elites, int) or num_elites < 1:
        raise ValueError(f"num_elites must be an integer in [1, inf), got {num_elites!r}")
    if kind == "log":
        i = torch.arange(1, num_elites + 1, dtype=dtype)
        w = torch.log(torch.tensor(num_elites + 1.0, dtype=dtype) / i)
    elif kind == "equal":
        w = torch.ones(num_elites, dtype=dtype)
    else:
        raise ValueError(f"kind must be one of 'log', 'equal', got {kind!r}")
    return w / w.sum()


def damping(generation: int, eps_start: float, eps_end: float, decay: float) -> float:
    """ε of Eq 15 at a generation: ``eps_end + (eps_start - eps_end) · decay**generation``.

    An exponential decay from ``eps_start`` towards ``eps_end`` (CEM-RL/VEB-RL: 1e-3 → 1e-5
    with decay 0.95). ``decay = 1`` keeps ε constant at ``eps_start``.
    """
    return float(eps_end + (eps_start - eps_end) * decay ** generation)


def tell(state: CEMState, samples: torch.Tensor, fitness, weights, eps: float) -> CEMState:
    """Update N(μ, Σ) from evaluated samples: Eq 15 with a diagonal Σ.

    Parameters
    ----------
    samples : (k, P) tensor
        The population z_1..z_k (any order; may include injected individuals).
    fitness : (k,) array-like
        f(z_i), **maximised**. Ties keep the earlier sample first (stable sort).
    weights : (μ,) array-like or str
        λ_1..λ_μ for the μ best samples, best first; a string is passed to
        :func:`elite_weights` with μ = k // 2 (the paper's "top half").
    eps : float
        ε ≥ 0, added to every variance (the ε·I of Eq 15).

    Returns
    -------
    CEMState with

    * μ_new = Σ_i λ_i z_i over the μ elites,
    * diag Σ_new = Σ_i λ_i (z_i − μ_old)² + ε, the diagonal of
      Σ λ_i (z_i − μ_old)(z_i − μ_old)ᵀ + εI,
    * generation + 1.

    Note that the spread is measured around the *old* mean μ_old, as in Eq 15 (and CEM-RL):
    this keeps the step the elites took in the variance, so the search widens along directions
    in which the mean is moving.
    """
    samples = torch.as_tensor(samples)
    if samples.ndim != 2 or samples.shape[1] != state.num_params:
        raise ValueError(f"samples must have shape (k, {state.num_params}), got {tuple(samples.shape)}")
    k = samples.shape[0]
    fit = torch.as_tensor(fitness, dtype=torch.float64).reshape(-1).cpu()
    if fit.shape[0] != k:
        raise ValueError(f"fitness must have shape ({k},), got {tuple(fit.shape)}")
    if torch.isnan(fit).any():
        raise ValueError("fitness must not contain NaN")
    if isinstance(weights, str):
        weights = elite_weights(max(k // 2, 1), weights)
    lam = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
    mu = lam.shape[0]
    if not 1 <= mu <= k:
        raise ValueError(f"weights must have between 1 and k={k} entries, got {mu}")
    if not bool(torch.all(lam >= 0)) or not math.isclose(float(lam.sum()), 1.0, rel_tol=1e-9, abs_tol=1e-9):
        raise ValueError("weights must be non-negative and sum to 1")
    if not (eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a finite number in [0, inf), got {eps!r}")
    order = torch.argsort(-fit, stable=True)  # best first
    elites = samples[order[:mu].to(samples.device)]  # (μ, P)
    lam = lam.to(dtype=samples.dtype, device=samples.device)
    mean_old = state.mean.to(samples.dtype)
    mean_new = lam @ elites  # (P,)
    dev = elites - mean_old  # (μ, P)
    var_new = lam @ (dev * dev) + eps  # (P,)
    return CEMState(mean=mean_new, var=var_new, generation=state.generation + 1)
