"""The decoder model: config presets, NNX definition, pure forward, KV cache."""

from jaxrl_post.model.config import PRESETS, ModelConfig, RopeScaling, get_preset
from jaxrl_post.model.transformer import (KVCache, Params, Transformer,
                                          abstract_params, forward, forward_shared_prefix,
                                          init_cache,
                                          init_params, param_logical_axes,
                                          unembed)
