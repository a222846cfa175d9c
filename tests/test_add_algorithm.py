"""docs/architecture.md's "add an algorithm" walk-through, followed: a toy algorithm (REINFORCE
on a K-armed bandit, ~30 lines) registered here runs from the CLI and keeps the learner protocol."""

import json
from dataclasses import dataclass

import pytest
import torch
from tensordict import TensorDict

from rlx.algos import registry
from rlx.core.learner import make_optimizer, optimizer_step


# step 1: the config, one commented field per hyperparameter
@dataclass
class BanditConfig:
    """REINFORCE on a Bernoulli bandit whose arm k pays with probability k / (arms - 1)."""

    arms: int = 4  # number of arms
    lr: float = 0.1  # Adam learning rate of the logits
    batch_size: int = 64  # pulls per update


# step 2: the learner, following rlx.core.learner.Learner
class Bandit:
    def __init__(self, cfg: BanditConfig):
        self.cfg, self.logits = cfg, torch.zeros(cfg.arms, requires_grad=True)
        self.optimizer = make_optimizer([self.logits], cfg.lr)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> TensorDict:
        n = obs.shape[0]
        dist = torch.distributions.Categorical(logits=self.logits)
        action = self.logits.argmax().expand(n) if deterministic else dist.sample((n,))
        return TensorDict({"action": action, "logp": dist.log_prob(action)}, batch_size=[n])

    def update(self, batch: TensorDict) -> dict[str, float]:
        logp = torch.distributions.Categorical(logits=self.logits).log_prob(batch["action"])
        adv = batch["reward"] - batch["reward"].mean()  # REINFORCE with a batch-mean baseline
        optimizer_step(self.optimizer, -(adv * logp).mean())
        return {"train/reward_mean": float(batch["reward"].mean())}

    def state_dict(self) -> dict:
        return {"logits": self.logits.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.logits.copy_(state["logits"])
        self.optimizer.load_state_dict(state["optimizer"])


# step 3: the entry point builds data source, learner and loop; the base loop does the rest
def train(ctx) -> dict:
    from rlx.core.loops import SamplerLoop

    cfg = ctx.cfg.algo
    learner = Bandit(cfg)
    pay = torch.linspace(0, 1, cfg.arms)

    def sample():
        out = learner.act(torch.zeros(cfg.batch_size, 1))
        out["reward"] = torch.bernoulli(pay[out["action"]], generator=loop.generator)
        return out, cfg.batch_size

    def evaluate() -> dict[str, float]:
        return {"eval/best_arm_prob": float(torch.softmax(learner.logits.detach(), 0)[-1])}

    loop = SamplerLoop(learner, sample, ctx.cfg.trainer, ctx.logger, evaluate, ctx.cfg.seed)
    loop.key_metric = "eval/best_arm_prob"
    return ctx.run(loop)


def check(cfg) -> None:  # step 4: what compose_config cannot know from the types
    if cfg.algo.arms < 2:
        raise ValueError(f"algo.arms={cfg.algo.arms}: a bandit needs at least 2 arms")


@pytest.fixture
def bandit_registered():
    # step 5: register (in rlx/algos/<name>.py this is the `@register(...)` decorator on train)
    registry.algorithms()
    registry.register("toy_bandit", BanditConfig, "REINFORCE on a Bernoulli bandit (the walk-through's toy)",
                      check=check)(train)
    yield
    registry._REGISTRY.pop("toy_bandit")


def test_walkthrough_algorithm_trains_from_the_cli(bandit_registered, tmp_path, capsys):
    from rlx.train import main

    run_dir = tmp_path / "run"
    args = ["algo=toy_bandit", "trainer.total_steps=6400", "trainer.eval_every=3200", "trainer.progress=false",
            "trainer.tensorboard=false", f"trainer.run_dir={run_dir}"]
    assert main(args) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval/best_arm_prob"] > 0.8  # from 1/4: it learned which arm pays most
    assert main(["algo=toy_bandit", "algo.arms=1", f"trainer.run_dir={tmp_path / 'bad'}"]) == 2
    assert "a bandit needs at least 2 arms" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_walkthrough_learner_keeps_the_protocol():
    from tests.test_learner_protocol import _only_through_optimizer_step

    learner = Bandit(BanditConfig())
    calls = _only_through_optimizer_step(learner)
    batch = learner.act(torch.zeros(8, 1))
    batch["reward"] = batch["action"].float()
    assert isinstance(learner.update(batch), dict) and calls[0] == 1
    clone = Bandit(BanditConfig())
    clone.load_state_dict(learner.state_dict())
    assert torch.equal(clone.act(torch.zeros(3, 1), True)["action"], learner.act(torch.zeros(3, 1), True)["action"])
