"""Every network a learner fine-tunes or a task pretrains, with no env, loop or optimizer:
the transformer LM and its Hugging Face adapter (`transformer`), the diffusion UNet, noise
schedule and DDIM sampler (`diffusion`), graph policies (`graph_nets`), the sEH proxy network
(`seh_proxy`), trajectory encoders (`traj_encoders`), the text reward model (`reward_models`)
and the digit classifier (`classifier`). Fitting goes through `rlx.core.fit`."""
