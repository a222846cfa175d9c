"""DDPO on a user's own denoiser (`algo.model=pkg.mod:factory`): 3-channel 8x8 images, a user
reward, trained from Python and from the CLI until the reward improves; the factory interface's
errors are one line; the noise schedule has its own config."""

import json

import numpy as np
import pytest
import torch

from rlx.algos.ddpo import DDPO, DDPOConfig, evaluate_ddpo
from rlx.envs.diffusion import load_denoiser
from rlx.models.diffusion import NoiseSchedule, NoiseScheduleConfig, ddim_sample
from rlx.train import compose_config, main
from tests.ddpo.user_model import color, factory

MOD = "tests.ddpo.user_model"
SF = dict(variant="sf", num_minibatches=1, lr=3e-4, num_samples=16, sample_steps=5, prompts=[0, 1], eval_samples=32)


def _sample_and_score(learner, generator):
    prompts = torch.tensor(learner.cfg.prompts)[torch.randint(2, (16,), generator=generator)]
    steps = learner.act(prompts, generator=generator)
    steps["reward"] = torch.zeros(steps.shape)
    steps["reward"][-1] = color(steps["action"][-1], prompts)
    return steps


def test_a_user_denoiser_learns_a_user_reward_in_python():
    torch.manual_seed(0)
    learner = DDPO(DDPOConfig(**SF), factory(), NoiseSchedule(NoiseScheduleConfig()), (3, 8, 8))
    before, images = evaluate_ddpo(learner, color, 32, accuracy=False)
    assert images.shape == (32, 3, 8, 8) and "eval/accuracy" not in before  # no digit classifier for these
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        learner.update(_sample_and_score(learner, g))
    after, _ = evaluate_ddpo(learner, color, 32, accuracy=False)
    assert after["eval/reward_mean"] > before["eval/reward_mean"] + 0.05  # measured: -0.004 -> 0.121


def test_a_user_denoiser_trains_from_the_cli(tmp_path):
    args = ["algo=ddpo_sf", f"algo.model={MOD}:factory", f"algo.reward={MOD}:color", "algo.prompts=[0,1]",
            "algo.lr=3e-4", "algo.num_samples=16", "algo.sample_steps=5", "algo.eval_samples=32",
            "trainer.total_steps=320", "trainer.eval_every=160", f"trainer.root={tmp_path}", "trainer.progress=false"]
    assert main(args) == 0
    run = next(tmp_path.glob("ddpo_sf/user_model_factory/*"))  # filed under the model, not env=digits
    evals = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "eval/reward_mean" in r]
    torch.manual_seed(0)  # the base model's reward on the run's evaluation noise (seed 0 + 10000)
    base = DDPO(DDPOConfig(**SF), factory(), NoiseSchedule(NoiseScheduleConfig()), (3, 8, 8))
    before, _ = evaluate_ddpo(base, color, 32, seed=10_000, accuracy=False)
    assert evals[-1]["eval/reward_mean"] > before["eval/reward_mean"] + 0.05
    assert not any("eval/accuracy" in r for r in evals)
    from PIL import Image

    grid = Image.open(sorted((run / "samples").glob("*.png"))[-1])
    assert grid.mode == "RGB" and np.asarray(grid).std(axis=2).mean() > 0  # colour images, not grey


def test_model_kwargs_and_schedule_fields_reach_the_factory():
    cfg = compose_config(["algo=ddpo", f"algo.model={MOD}:factory", "algo.model_kwargs.width=8",
                          "algo.beta_schedule=squaredcos_cap_v2", "algo.num_train_timesteps=500"])
    model, schedule, shape = load_denoiser(cfg.algo, None)
    assert model.inp.out_channels == 8 and shape == (3, 8, 8) and schedule.num_train_timesteps == 500
    assert torch.equal(schedule.alphas_cumprod, NoiseSchedule(NoiseScheduleConfig(500, beta_schedule="squaredcos_cap_v2")).alphas_cumprod)


@pytest.mark.parametrize("args, says", [
    ([f"algo.model={MOD}:absent"], f"module '{MOD}' has no attribute 'absent'"),
    (["algo.model=my_unet"], "algo.model='my_unet': use digits, pkg.mod:factory"),
    (["algo.beta_start=0.001"], "algo.beta_start set a pkg.mod:factory model; algo.model=digits takes them from env.kwargs"),
    ([f"algo.model={MOD}:factory", "algo.base_checkpoint=x.pt"], "algo.base_checkpoint is the digits model's file"),
    (["algo.model=diffusers:/no/such/dir"], "no folder '/no/such/dir'"),
    ([f"algo.model={MOD}:factory", "algo.image_shape=[3,8]"], "algo.image_shape=[3, 8]: give [C, H, W]"),
])
def test_bad_model_settings_are_refused_before_any_work(args, says, tmp_path, capsys):
    assert main(["algo=ddpo", *args, f"trainer.root={tmp_path}", "trainer.progress=false"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert says in line
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args, says", [
    (["algo.prompts=[0,5]"], "algo.prompts=[0, 5]: TinyDenoiser has 2 prompts (0..1)"),
    (["algo.guidance_scale=3"], "algo.guidance_scale=3.0 needs an empty prompt: TinyDenoiser has no `null_prompt`"),
    ([f"algo.model={MOD}:OneChannel"], "the module returned (2, 1, 8, 8) for x [2, 3, 8, 8]; eps(x, t, prompt) must have the shape of x"),
    ([f"algo.model={MOD}:not_a_module"], "returned function, not a torch.nn.Module"),
    ([f"algo.reward={MOD}:wrong_length"], f"reward {MOD}:wrong_length returned shape (15,) for 16 images"),
])
def test_what_the_model_declares_is_checked_in_one_line(args, says, tmp_path, capsys):
    assert main(["algo=ddpo", f"algo.model={MOD}:factory", "algo.prompts=[0,1]", "algo.num_samples=16", "algo.sample_steps=2",
                 f"algo.reward={MOD}:color", "trainer.total_steps=16", *args, f"trainer.root={tmp_path}",
                 "trainer.progress=false"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert says in line
    assert not list(tmp_path.rglob("*.pt"))


def test_sampling_any_channels_and_size():
    model = factory(channels=4, size=6)
    xs, logps, _ = ddim_sample(model, NoiseSchedule(NoiseScheduleConfig()), torch.tensor([0, 1, 1]), num_steps=3,
                               image_size=(6, 6), channels=4, generator=torch.Generator().manual_seed(0))
    assert xs.shape == (4, 3, 4, 6, 6) and logps.shape == (3, 3)


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_beta_schedules(kind):
    """linear / sqrt-linear / cosine betas (Nichol & Dhariwal 2021, eq. 17 with s = 0.008, capped at 0.999)."""
    import math

    s = NoiseSchedule(NoiseScheduleConfig(100, 1e-4, 0.02, kind))
    t = torch.arange(100, dtype=torch.float64)
    if kind == "linear":
        expected = 1e-4 + (0.02 - 1e-4) * t / 99
    elif kind == "scaled_linear":
        expected = (1e-2 + (0.02**0.5 - 1e-2) * t / 99) ** 2
    else:
        f = lambda u: math.cos((u / 100 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        expected = torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(100)], dtype=torch.float64)
    assert torch.allclose(s.betas.double(), expected, rtol=1e-5, atol=1e-7)
    assert torch.allclose(s.alphas_cumprod.double(), torch.cumprod(1 - expected, 0), rtol=1e-5)
    with pytest.raises(ValueError, match="beta_start < beta_end"):
        NoiseSchedule(NoiseScheduleConfig(100, 0.02, 1e-4))
