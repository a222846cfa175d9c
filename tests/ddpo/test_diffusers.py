"""`algo.model=diffusers:<dir>`: tiny randomly initialised diffusers UNets saved to a temp folder
(nothing downloaded) load as DDPO denoisers; rlx's DDIM step equals `DDIMScheduler.step`, the
prediction types become epsilon, prompts reach class labels or cross-attention, and DDPO trains
the model from the CLI."""

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from rlx.algos.ddpo import DDPO, DDPOConfig  # noqa: E402
from rlx.models.diffusers_unet import load_diffusers  # noqa: E402
from rlx.models.diffusion import ddim_step  # noqa: E402
from rlx.train import main  # noqa: E402

MOD = "tests.ddpo.user_model"
BLOCKS = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, sample_size=8,
              in_channels=3, out_channels=3)


def save_unet(folder, prediction_type="epsilon", layout="pipeline", classes=2):
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**BLOCKS, down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), num_class_embeds=classes)
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                                        prediction_type=prediction_type)
    if layout == "pipeline":
        unet.save_pretrained(folder / "unet")
        scheduler.save_pretrained(folder / "scheduler")
    else:
        unet.save_pretrained(folder)
        scheduler.save_pretrained(folder)
    return unet, scheduler


@pytest.mark.parametrize("layout", ["pipeline", "bare"])
def test_a_saved_unet_loads_as_a_denoiser(tmp_path, layout):
    unet, scheduler = save_unet(tmp_path, layout=layout)
    model, schedule, shape = load_diffusers(tmp_path)
    assert shape == (3, 8, 8) and model.num_prompts == 2 and model.null_prompt is None
    assert torch.allclose(schedule.alphas_cumprod, scheduler.alphas_cumprod)
    x, t, c = torch.randn(2, 3, 8, 8), torch.tensor([999, 10]), torch.tensor([0, 1])
    with torch.no_grad():
        assert torch.allclose(model(x, t, c), unet(x, t, class_labels=c).sample, atol=1e-6)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_rlx_ddim_step_is_the_ddim_scheduler_step(tmp_path, prediction_type):
    """x_t -> x_{t - 1000/S} with eta = 1 and the same noise: rlx's step on the converted epsilon
    equals DDIMScheduler.step on the model's raw output, for every prediction type."""
    unet, scheduler = save_unet(tmp_path, prediction_type)
    model, schedule, _ = load_diffusers(tmp_path)
    scheduler.set_timesteps(10)
    x, c = torch.randn(2, 3, 8, 8), torch.tensor([1, 0])
    t = torch.tensor([500, 500])
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = scheduler.step(unet(x, t, class_labels=c).sample, 500, x, eta=1.0, variance_noise=noise).prev_sample
        ours, logp = ddim_step(model, schedule, x, t, t - 100, c, 1.0, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(ours, expected, atol=1e-5)
    assert logp.shape == (2,)


def test_a_cross_attention_unet_reads_prompt_embeddings(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(**BLOCKS, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                          up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8,
                                          attention_head_dim=2)
    unet.save_pretrained(tmp_path / "unet")
    diffusers.DDIMScheduler(clip_sample=False).save_pretrained(tmp_path / "scheduler")
    with pytest.raises(ValueError, match="needs prompt embeddings: save prompt_embeds.safetensors"):
        load_diffusers(tmp_path)
    embeds, negative = torch.randn(3, 4, 8), torch.zeros(4, 8)
    save_file({"prompt_embeds": embeds, "negative_prompt_embeds": negative}, tmp_path / "prompt_embeds.safetensors")
    model, _, shape = load_diffusers(tmp_path)
    assert shape == (3, 8, 8) and model.num_prompts == 3 and model.null_prompt == 3  # guidance's empty prompt
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([700, 700])
    with torch.no_grad():
        got = model(x, t, torch.tensor([2, 3]))
        assert torch.allclose(got[0], unet(x[:1], t[:1], encoder_hidden_states=embeds[2:3]).sample[0], atol=1e-5)
        assert torch.allclose(got[1], unet(x[1:], t[1:], encoder_hidden_states=negative[None]).sample[0], atol=1e-5)
    learner = DDPO(DDPOConfig(prompts=[0, 2], guidance_scale=2.0, sample_steps=2), model, load_diffusers(tmp_path)[1], shape)
    steps = learner.act(torch.tensor([0, 2]))  # guided sampling through the empty prompt
    assert steps["action"].shape == (2, 2, 3, 8, 8)


def test_folders_rlx_cannot_read_are_one_line(tmp_path):
    with pytest.raises(ValueError, match="no diffusers model in"):
        load_diffusers(tmp_path)
    save_unet(tmp_path)
    (tmp_path / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(ValueError, match="no scheduler config in .*save the DDIMScheduler/DDPMScheduler"):
        load_diffusers(tmp_path)
    save_unet(tmp_path)
    config = tmp_path / "unet" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "_class_name": "UNet1DModel"}))
    with pytest.raises(ValueError, match="a UNet1DModel is not supported"):
        load_diffusers(tmp_path)


def test_ddpo_trains_a_diffusers_unet_from_the_cli(tmp_path):
    save_unet(tmp_path / "tiny_unet")
    root = tmp_path / "runs"
    assert main(["algo=ddpo_sf", f"algo.model=diffusers:{tmp_path / 'tiny_unet'}", f"algo.reward={MOD}:color",
                 "algo.prompts=[0,1]", "algo.num_samples=8", "algo.sample_steps=3", "algo.eval_samples=8",
                 "trainer.total_steps=16", f"trainer.root={root}", "trainer.progress=false"]) == 0
    run = next(root.glob("ddpo_sf/diffusers_tiny_unet/*"))  # filed under the model folder's name
    final = json.loads((run / "summary.json").read_text())
    assert "eval/reward_mean" in json.dumps(final) and (run / "checkpoints").is_dir()
