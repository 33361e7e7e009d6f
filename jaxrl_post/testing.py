"""Small fixtures shared by tests and notebooks: tiny configs and meshes."""

from __future__ import annotations

import jax

from jaxrl_post import sharding as shd
from jaxrl_post.model import ModelConfig, get_preset


def nano_config(**overrides) -> ModelConfig:
  """The `nano` preset (vocab 64, width 32, 2 layers): compiles in seconds."""
  return get_preset("nano", **overrides)


def mesh_of(data: int = 1, fsdp: int = 1, tensor: int = 1):
  """A ("data", "fsdp", "tensor") mesh over the first data*fsdp*tensor devices."""
  return shd.make_mesh(shd.MeshConfig(data=data, fsdp=fsdp, tensor=tensor),
                       devices=jax.devices()[: data * fsdp * tensor])
