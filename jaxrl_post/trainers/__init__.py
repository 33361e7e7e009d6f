"""Trainers: SFT, GRPO (DAPO / Dr. GRPO variants) and SRL."""


def run_trainer(hp, workdir: str, config_dict: dict | None = None) -> dict:
  """Runs the trainer named by `hp.trainer` in `workdir`."""
  if hp.trainer == "sft":
    from jaxrl_post.trainers.loop import run_sft
    return run_sft(hp, workdir, config_dict)
  from jaxrl_post.trainers.grpo import run_rl
  return run_rl(hp, workdir, config_dict)
