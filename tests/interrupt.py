"""Stopping a run the way Ctrl-C does, at a chosen point, for the resume tests."""


def interrupt_at_sample(run, n: int) -> None:
    """Run a `ContinualRun`'s loop and raise KeyboardInterrupt as its sampler is called the
    (n + 1)-th time (the loop checkpoints and stops, as on Ctrl-C)."""
    sample, calls = run.loop.sample, []

    def interrupted():
        if len(calls) == n:
            raise KeyboardInterrupt
        calls.append(1)
        return sample()

    run.loop.sample = interrupted
    try:
        run.loop.run()
    except KeyboardInterrupt:
        pass
