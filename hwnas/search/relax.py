"""RELAX gradient estimator for a measured (non-differentiable) cost of categorical choices.

UNAS (Wang et al., CVPR 2020, Eq. 5) estimates the gradient of E_{z~p_alpha}[f(z)], where
f is a black-box cost such as measured latency, with the RELAX estimator (Grathwohl et
al., 2018):

    g = (f(z) - c(zeta~)) grad log p(z) + grad c(zeta) - grad c(zeta~)

where c is a differentiable surrogate of f evaluated on relaxed (Gumbel-softmax) samples:
zeta is the relaxed sample that produced z, and zeta~ ~ r(zeta | z) is a relaxed sample
conditioned on the same z. The estimator is unbiased for any c; a good c cuts variance.

Each layer i has logits alpha_i over K choices; an optional boolean mask [L, K] marks the
valid ones (layers with fewer choices). Everything supports leading batch dimensions:
logits [..., L, K] give independent samples per batch element, so per-sample gradients
come from one backward pass over a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from hwnas.errors import HwnasError

_U_EPS = 1e-6  # uniform noise is clamped to [eps, 1 - eps] so every log stays finite


@dataclass
class RelaxSample:
    """One draw z ~ p(z) with the relaxed samples RELAX needs (batched if logits were)."""

    z: torch.Tensor  # LongTensor [..., L], chosen index per layer
    onehot: torch.Tensor  # [..., L, K] float one-hot of z (no grad)
    zeta: torch.Tensor  # [..., L, K] relaxed sample, differentiable w.r.t. logits
    zeta_tilde: torch.Tensor  # [..., L, K] conditional relaxed sample, differentiable w.r.t. logits
    log_prob: torch.Tensor  # [...] (scalar if unbatched), log p(z), differentiable


def _valid_mask(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Valid entries: those in `mask` (if given) whose logit is not -inf."""
    valid = ~torch.isneginf(logits)
    if mask is not None:
        valid = valid & mask.to(device=logits.device, dtype=torch.bool)
    if not bool(valid.any(dim=-1).all()):
        raise HwnasError("every searchable layer needs at least one valid choice")
    return valid


def masked_log_softmax(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """log q over the valid entries; invalid entries are -inf (probability 0)."""
    valid = _valid_mask(logits, mask)
    return torch.log_softmax(logits.masked_fill(~valid, float("-inf")), dim=-1)


def soften(logits: torch.Tensor, eps: float = 0.08, mask: torch.Tensor | None = None) -> torch.Tensor:
    """UNAS's optional softening: log((q + eps) / (1 + n_valid * eps)).

    Keeps every valid choice's probability above eps / (1 + n eps), so sampling keeps
    exploring ops that the logits have pushed towards zero. Returns log-probabilities
    usable as logits (invalid entries -inf).
    """
    valid = _valid_mask(logits, mask)
    q = masked_log_softmax(logits, valid).exp()
    n_valid = valid.sum(dim=-1, keepdim=True).to(q.dtype)
    soft = (q + eps) / (1.0 + n_valid * eps)
    return torch.where(valid, torch.log(torch.where(valid, soft, 1.0)), float("-inf"))


def sample(
    logits: torch.Tensor,
    tau: float,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> RelaxSample:
    """Draw z by Gumbel-max and build zeta (its relaxation) and zeta~ ~ r(zeta | z).

    zeta~ is the REBAR conditional construction (Tucker et al. 2017, App.) driven by the
    SAME uniforms u as z, mapped to v through the conditional Gumbel CDFs (as in the
    UNAS code). Given z = k, the max x_k ~ Gumbel(0) and each other x_j is a Gumbel(log q_j)
    truncated below x_k, so
        v_k = exp(-exp(-x_k)),       x~_k = -log(-log v_k)
        v_j = exp(-q_j (exp(-x_j) - exp(-x_k))),  x~_j = -log(-log(v_j)/q_j - log v_k)
    makes v uniform given z (so zeta~ is an exact draw of r(zeta | z)) and strongly
    coupled to zeta. Using u itself for v would be biased: given z, u_k is not uniform.
    v and k are held constant; zeta~ depends on the logits through q only.
    """
    if tau <= 0:
        raise HwnasError(f"temperature tau must be positive, got {tau}")
    valid = _valid_mask(logits, mask)
    log_q = masked_log_softmax(logits, valid)

    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
    u = u.clamp(_U_EPS, 1.0 - _U_EPS)
    e = -torch.log(u)  # standard exponentials, E_j = -log u_j > 0

    # Gumbel-max: x_j = log q_j - log E_j; invalid entries are -inf and never win.
    x = log_q - torch.log(e)
    z = x.argmax(dim=-1)
    onehot = torch.nn.functional.one_hot(z, logits.shape[-1]).to(logits.dtype)
    zeta = torch.softmax(x / tau, dim=-1)

    # Conditional sample. Work with w_j = -log v_j (>= 0), all detached.
    with torch.no_grad():
        q = log_q.exp()
        w_k = (onehot * e).sum(-1, keepdim=True) / (onehot * q).sum(-1, keepdim=True)  # exp(-x_k)
        w = (e - q * w_k).clamp_min(torch.finfo(logits.dtype).tiny)  # q_j (exp(-x_j) - exp(-x_k))
        log_w = torch.where(valid, torch.log(w), 0.0)
        log_w_k = torch.log(w_k)
    # x~_j = -log(w_j / q_j + w_k) in log space; q enters with gradient. Invalid entries
    # go through safe values first so neither value nor gradient ever sees inf - inf.
    log_q_safe = torch.where(valid, log_q, 0.0)
    x_other = -torch.logaddexp(log_w - log_q_safe, log_w_k)
    x_tilde = torch.where(onehot.bool(), -log_w_k, x_other)
    x_tilde = torch.where(valid, x_tilde, float("-inf"))
    zeta_tilde = torch.softmax(x_tilde / tau, dim=-1)

    log_prob = (log_q.gather(-1, z.unsqueeze(-1)).squeeze(-1)).sum(-1)
    return RelaxSample(z=z, onehot=onehot, zeta=zeta, zeta_tilde=zeta_tilde, log_prob=log_prob)


def relax_loss(
    f_z: float | torch.Tensor,
    control: Callable[[torch.Tensor], torch.Tensor],
    s: RelaxSample,
) -> torch.Tensor:
    """Surrogate loss whose gradient w.r.t. the logits is the RELAX estimate.

    grad = (f(z) - c(zeta~)) grad log p(z) + grad c(zeta) - grad c(zeta~). Its value is
    meaningless; call .backward() (sum it first when batched). `control` maps relaxed
    weights [..., L, K] to a cost [...]; f_z is the measured cost, shape [...] or scalar.
    Gradients also flow into the control's own parameters, but those are not a useful
    training signal; tune c by minimising the estimator's variance instead (RELAX).
    """
    c_zeta = control(s.zeta)
    c_zeta_tilde = control(s.zeta_tilde)
    f_z = torch.as_tensor(f_z, dtype=s.log_prob.dtype, device=s.log_prob.device)
    return (f_z - c_zeta_tilde).detach() * s.log_prob + c_zeta - c_zeta_tilde


def reinforce_loss(f_z: float | torch.Tensor, s: RelaxSample) -> torch.Tensor:
    """Surrogate loss for plain REINFORCE (no baseline): grad = f(z) grad log p(z)."""
    f_z = torch.as_tensor(f_z, dtype=s.log_prob.dtype, device=s.log_prob.device)
    return f_z.detach() * s.log_prob


def rloo_loss(f: torch.Tensor, log_prob: torch.Tensor) -> torch.Tensor:
    """Surrogate loss for the score function with a leave-one-out baseline (RLOO, Kool et al.
    2019) over n >= 2 independent draws along the last dimension: grad = 1/n sum_m (f_m - mean of
    the others' f) grad log p(z_m). Unbiased; the baseline removes what the draws share, such as
    the batch they were all scored on."""
    n = f.shape[-1]
    if n < 2:
        raise HwnasError(f"a leave-one-out baseline needs at least 2 draws, got {n}")
    f = f.detach()
    advantage = f - (f.sum(-1, keepdim=True) - f) / (n - 1)
    return (advantage * log_prob).sum(-1) / n
