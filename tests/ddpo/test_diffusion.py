import math

import pytest
import torch

from rlx.envs.diffusion import checkpoint_path, digits_images, load_base_model
from rlx.models.diffusion import (ConditionalUNet, DigitsDiffusionConfig, NoiseSchedule, ddim_sample, ddim_step,
                                  gaussian_log_prob)


def test_digits_images_are_upsampled_and_scaled():
    x, y = digits_images(32)
    assert x.shape == (1797, 1, 32, 32) and y.shape == (1797,)
    assert x.min() >= -1 and x.max() <= 1 and set(y.tolist()) == set(range(10))


def test_config_rejects_bad_sizes():
    with pytest.raises(ValueError, match="image_size"):
        DigitsDiffusionConfig(image_size=16)
    with pytest.raises(ValueError, match="beta"):
        DigitsDiffusionConfig(beta_start=0.1, beta_end=0.01)


def _direct_step(model, schedule, x_t, t, t_prev, c, eta, x_prev):
    """The DDIM step written out from Song et al. 2021 eq. 12/16, and its Gaussian log-density."""
    abar = schedule.alphas_cumprod.double()
    a_t, a_s = abar[t].view(-1, 1, 1, 1), abar[t_prev].view(-1, 1, 1, 1)
    eps = model(x_t, t, c).double()
    x0 = (x_t.double() - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    sigma = eta * ((1 - a_s) / (1 - a_t)).sqrt() * (1 - a_t / a_s).sqrt()
    mean = a_s.sqrt() * x0 + (1 - a_s - sigma**2).sqrt() * eps
    density = torch.distributions.Normal(mean, sigma.expand_as(mean)).log_prob(x_prev.double())
    return density.flatten(1)


@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_step_log_prob_equals_direct_gaussian_density(eta):
    torch.manual_seed(0)
    cfg = DigitsDiffusionConfig(base_channels=8)
    model, schedule = ConditionalUNet(cfg), NoiseSchedule(cfg)
    torch.nn.init.normal_(model.out[-1].weight, std=0.1)  # a non-trivial epsilon prediction
    x_t = torch.randn(4, 1, 32, 32)
    t, t_prev, c = torch.tensor([999, 500, 100, 7]), torch.tensor([899, 400, 0, 0]), torch.tensor([0, 3, 9, 10])
    x_prev, logp = ddim_step(model, schedule, x_t, t, t_prev, c, eta, generator=torch.Generator().manual_seed(1))
    direct = _direct_step(model, schedule, x_t, t, t_prev, c, eta, x_prev)
    torch.testing.assert_close(logp.double(), direct.mean(1), rtol=1e-4, atol=1e-4)
    _, logp_sum = ddim_step(model, schedule, x_t, t, t_prev, c, eta, prev_sample=x_prev, reduction="sum")
    torch.testing.assert_close(logp_sum.double(), direct.sum(1), rtol=1e-4, atol=1e-2)


def test_sampler_log_probs_are_recomputed_exactly_and_ddpm_is_the_eta1_full_grid():
    torch.manual_seed(0)
    cfg = DigitsDiffusionConfig(base_channels=8)
    model, schedule = ConditionalUNet(cfg), NoiseSchedule(cfg)
    prompts = torch.tensor([1, 2, 3])
    xs, logps, grid = ddim_sample(model, schedule, prompts, num_steps=5, generator=torch.Generator().manual_seed(0))
    assert xs.shape == (6, 3, 1, 32, 32) and logps.shape == (5, 3) and grid[0] == 999 and grid[-1] == 0
    for k in range(5):
        _, again = ddim_step(model, schedule, xs[k], grid[k].expand(3), grid[k + 1].expand(3), prompts, 1.0,
                             prev_sample=xs[k + 1])
        assert torch.equal(again, logps[k])
    # eta = 1 between consecutive training steps: DDPM's posterior variance beta~_t (Ho et al. eq. 7)
    abar, betas = schedule.alphas_cumprod.double(), schedule.betas.double()
    t = torch.tensor([500])
    x = torch.zeros(1, 1, 32, 32)
    x_prev, _ = ddim_step(model, schedule, x, t, t - 1, prompts[:1], 1.0, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    beta_tilde = (1 - abar[499]) / (1 - abar[500]) * betas[500]
    _, lp = ddim_step(model, schedule, x, t, t - 1, prompts[:1], 1.0, prev_sample=x_prev)
    # log-density of the drawn point = log N(z; 0, 1) - log sigma per pixel with sigma^2 = beta~
    expected = (-(noise.double() ** 2) / 2 - 0.5 * math.log(2 * math.pi)).mean() - 0.5 * beta_tilde.log()
    assert abs(float(lp.detach()) - float(expected)) < 1e-3


def test_gaussian_log_prob_rejects_unknown_reduction():
    with pytest.raises(ValueError, match="reduction"):
        gaussian_log_prob(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 1, 1), "max")


def test_base_model_is_cached_and_reused(tiny_model, monkeypatch):
    cfg, model = tiny_model
    path = checkpoint_path(cfg)
    assert path.is_file()
    import rlx.envs.diffusion as diffusion

    monkeypatch.setattr(diffusion, "pretrain", lambda *a, **k: pytest.fail("pretrained again despite the cache"))
    again = load_base_model(cfg)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError, match="pretrain"):
        load_base_model(DigitsDiffusionConfig(base_channels=8, steps=7), pretrain_if_missing=False)


def test_pretraining_reduces_the_ddpm_loss():
    from rlx.envs.diffusion import ddpm_loss, pretrain

    cfg = DigitsDiffusionConfig(base_channels=8, steps=25, batch_size=16, lr=3e-3, ema_decay=0.0)
    x, y = digits_images(32)

    def loss(model):
        with torch.no_grad():
            return float(ddpm_loss(model, NoiseSchedule(cfg), x[:64], y[:64], torch.Generator().manual_seed(0)))

    before = loss(ConditionalUNet(cfg))  # zero-initialised output: eps_hat = 0, loss = E[eps^2] = 1
    after = loss(pretrain(cfg, verbose=False))
    assert before == pytest.approx(1.0, abs=0.05) and after < 0.95 * before
