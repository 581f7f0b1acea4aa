"""RELAX estimator vs exact gradients on an enumerable toy search space.

The toy: 3 layers x 4 ops, measured latency = sum of per-op latencies + a bottleneck
term (max over layers), cost = relu(latency - T). The control variate is a linear
latency model, least-squares fitted on every configuration, through the same hinge:
differentiable but imperfect, like a real latency surrogate.
"""


import pytest
import torch

from hwnas.errors import HwnasError
from hwnas.search import relax
from hwnas.search.relax_check import toy_problem

N = 20_000
TAU = 0.5
Z_LIMIT = 4.5  # per-component |mean - exact| in standard errors
MASK_3 = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)


def _toy(mask=None, seed=0):
    return toy_problem(mask, seed)


def _exact_grad(toy):
    return toy.exact_gradient()


def _grads(toy, estimator, sampler=relax.sample, seed=1):
    """Per-sample gradient estimates [N, L, K] from one batched backward pass."""
    gen = torch.Generator().manual_seed(seed)
    logits = toy.logits.expand(N, *toy.logits.shape).clone().requires_grad_()
    s = sampler(logits, TAU, toy.mask, gen)
    f_z = toy.cost(s.z)
    if estimator == "relax":
        loss = relax.relax_loss(f_z, toy.control, s)
    elif estimator == "reinforce":
        loss = relax.reinforce_loss(f_z, s)
    else:  # broken on purpose: control as a baseline without the relaxed correction
        loss = (f_z - toy.control(s.zeta_tilde)).detach() * s.log_prob
    loss.sum().backward()
    return logits.grad, s


def _z_scores(grads, exact, mask):
    se = grads.std(0) / grads.shape[0] ** 0.5
    return ((grads.mean(0) - exact) / se)[mask].abs()


@pytest.fixture(scope="module", params=["full", "masked"])
def case(request):
    mask = MASK_3 if request.param == "masked" else None
    toy = _toy(mask)
    exact = _exact_grad(toy)
    g_relax, s = _grads(toy, "relax")
    g_reinf, _ = _grads(toy, "reinforce", seed=2)
    return dict(toy=toy, exact=exact, relax=g_relax, reinforce=g_reinf, sample=s)


def test_relax_matches_exact_gradient(case):
    exact, grads, mask = case["exact"], case["relax"], case["toy"].mask
    assert _z_scores(grads, exact, mask).max() < Z_LIMIT
    assert (grads.mean(0) - exact).norm() / exact.norm() < 0.05


def test_reinforce_matches_exact_gradient(case):
    exact, grads, mask = case["exact"], case["reinforce"], case["toy"].mask
    assert _z_scores(grads, exact, mask).max() < Z_LIMIT


def test_relax_has_lower_variance_than_reinforce(case):
    ratio = case["relax"].var(0).sum() / case["reinforce"].var(0).sum()
    assert ratio < 0.6, f"RELAX/REINFORCE variance ratio {ratio:.3f}"


def test_samples_are_consistent_and_masked(case):
    s, mask = case["sample"], case["toy"].mask
    assert torch.equal(s.zeta_tilde.argmax(-1), s.z)
    assert torch.equal(s.onehot.argmax(-1), s.z)
    assert mask.expand_as(s.onehot)[s.onehot.bool()].all()  # invalid ops never sampled
    assert (s.zeta[..., ~mask] == 0).all() and (s.zeta_tilde[..., ~mask] == 0).all()
    # Same uniforms through the conditional CDFs: zeta~ equals zeta in value.
    torch.testing.assert_close(s.zeta_tilde, s.zeta)
    for g in (case["relax"], case["reinforce"]):
        assert torch.isfinite(g).all()
        assert (g[..., ~mask] == 0).all()


def _naive_sample(logits, tau, mask, generator):
    """Conditional sample that reuses u directly as v: biased, u_k given z is not uniform."""
    log_q = torch.log_softmax(logits, -1)
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype).clamp(1e-6, 1 - 1e-6)
    x = log_q - torch.log(-torch.log(u))
    z = x.argmax(-1)
    onehot = torch.nn.functional.one_hot(z, logits.shape[-1]).to(logits.dtype)
    log_u_k = (onehot * torch.log(u)).sum(-1, keepdim=True)
    x_tilde = torch.where(onehot.bool(), -torch.log(-log_u_k), -torch.log(-torch.log(u) / log_q.exp() - log_u_k))
    log_p = log_q.gather(-1, z.unsqueeze(-1)).squeeze(-1).sum(-1)
    return relax.RelaxSample(z, onehot, torch.softmax(x / tau, -1), torch.softmax(x_tilde / tau, -1), log_p)


@pytest.mark.parametrize("broken", ["naive_conditional", "no_correction"])
def test_check_detects_biased_estimators(broken):
    """The unbiasedness check has power: two plausible mistakes fail it clearly."""
    toy = _toy()
    if broken == "naive_conditional":
        grads, _ = _grads(toy, "relax", sampler=_naive_sample)
    else:
        grads, _ = _grads(toy, "no_correction")
    assert _z_scores(grads, _exact_grad(toy), toy.mask).max() > 2 * Z_LIMIT


def test_unbatched_shapes_and_float32():
    logits = torch.randn(3, 4, requires_grad=True)
    s = relax.sample(logits, 1.0, MASK_3, torch.Generator().manual_seed(0))
    assert s.z.shape == (3,) and s.z.dtype == torch.long
    assert s.zeta.shape == s.zeta_tilde.shape == s.onehot.shape == (3, 4)
    assert s.log_prob.shape == ()
    relax.relax_loss(2.0, lambda w: (w * w).sum((-1, -2)), s).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[1, 3] == 0


def test_float32_argmax_consistency_many_samples():
    gen = torch.Generator().manual_seed(3)
    logits = 3.0 * torch.randn(100_000, 3, 4, generator=gen)
    for tau in (0.05, 2.0):
        s = relax.sample(logits, tau, MASK_3, gen)
        assert torch.equal(s.zeta_tilde.argmax(-1), s.z)


def test_soften_keeps_every_valid_choice_alive():
    logits = torch.tensor([[20.0, 0.0, 0.0, 0.0], [0.0, 20.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 1]], dtype=torch.bool)
    eps = 0.08
    p = relax.soften(logits, eps, mask).exp()
    torch.testing.assert_close(p.sum(-1), torch.ones(2))
    assert p[0].min() >= eps / (1 + 4 * eps) - 1e-7
    assert p[1, 2] == 0 and p[1][mask[1]].min() >= eps / (1 + 3 * eps) - 1e-7
    s = relax.sample(relax.soften(logits, eps, mask), 1.0, generator=torch.Generator().manual_seed(0))
    assert s.z[1] != 2


def test_invalid_inputs_raise():
    mask = torch.ones(2, 3, dtype=torch.bool)
    mask[1] = False
    with pytest.raises(HwnasError):
        relax.sample(torch.zeros(2, 3), 1.0, mask)
    with pytest.raises(HwnasError):
        relax.sample(torch.zeros(2, 3), 0.0)


def test_rloo_matches_exact_gradient_and_beats_reinforce_on_as_many_draws(case):
    toy, exact, m = case["toy"], case["exact"], 4
    gen = torch.Generator().manual_seed(3)
    logits = toy.logits.expand(N // m, m, *toy.logits.shape).clone().requires_grad_()
    s = relax.sample(logits, TAU, toy.mask, gen)
    relax.rloo_loss(toy.cost(s.z), s.log_prob).sum().backward()
    grads = logits.grad.sum(1)  # one estimate per group of m draws
    assert _z_scores(grads, exact, toy.mask).max() < Z_LIMIT
    reinforce_of_m = case["reinforce"].reshape(N // m, m, *exact.shape).mean(1)
    assert grads.var(0).sum() < 0.85 * reinforce_of_m.var(0).sum()  # 0.74-0.75 measured: the toy shares little


def test_rloo_needs_two_draws():
    with pytest.raises(HwnasError, match="at least 2 draws"):
        relax.rloo_loss(torch.ones(1), torch.zeros(1))
