"""The benchmark's model and tokenizer.

Names:

- ``smollm2-135m-instruct``: the packaged model with its real weights (``fairrl.models.loading``);
- ``arch:smollm2-135m``, ``arch:qwen2.5-0.5b``, ``arch:qwen2.5-1.5b``: randomly initialised models whose
  configs are written below from the published architectures. With forced completion lengths the work
  of a step (FLOPs, bytes, kernel shapes) does not depend on the weight values, so these measure the
  real models' throughput without downloading them;
- ``tiny``: a 2-layer Llama for tests;
- anything else: a local model folder, loaded like ``fairrl train`` loads one.

Every random-init model uses the packaged SmolLM2 tokenizer (49,152 tokens). The Qwen configs keep
their published vocabulary (151,936) so that parameter counts and LM-head FLOPs are the real ones: the
tokenizer only ever produces ids below 49,152, which every embedding row range covers, and sampled ids
beyond the tokenizer are dropped when decoding (the benchmark's reward does not read them anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fairrl.errors import ConfigError
from fairrl.models.loading import (
    BUILTIN_MODELS,
    DTYPES,
    builtin_cache_folder,
    gguf_tokenizer,
    load_model,
    load_tokenizer,
)

# Published architectures (the models' config.json on the Hugging Face hub). All tie the LM head
# to the input embedding. Qwen2 adds biases to q/k/v (built into the class, not a config key).
ARCHITECTURES: dict[str, dict] = {
    "arch:smollm2-135m": dict(
        model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, rope_theta=100000.0,
        max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True,
    ),  # 134,515,008 parameters
    "arch:qwen2.5-0.5b": dict(
        model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, rope_theta=1000000.0,
        max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True,
    ),  # 494,032,768 parameters
    "arch:qwen2.5-1.5b": dict(
        model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, rope_theta=1000000.0,
        max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True,
    ),  # 1,543,714,304 parameters
    "tiny": dict(
        model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, vocab_size=49152, rope_theta=10000.0,
        max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=True,
    ),
}  # fmt: skip
PACKAGED = "smollm2-135m-instruct"


@dataclass
class BenchModel:
    """A model ready for both sides: the tokenizer, the (untrained) model, and where its weights live."""

    name: str
    tokenizer: object
    model: torch.nn.Module
    folder: str | None  # weights on disk (TRL builds its reference model from it); None until saved
    random_init: bool


def known_models() -> list[str]:
    return [PACKAGED, *ARCHITECTURES]


def arch_config(name: str, tokenizer=None):
    """The ``transformers`` config of a named architecture; special-token ids come from ``tokenizer``."""
    from transformers import AutoConfig

    if name not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    spec = dict(ARCHITECTURES[name])
    model_type = spec.pop("model_type")
    ids = {}
    if tokenizer is not None:
        ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return AutoConfig.for_model(model_type, **spec, **ids)


def bench_tokenizer():
    """The packaged SmolLM2 tokenizer: from the converted model folder when cached, else from the GGUF file.

    Reading it straight from the GGUF avoids converting the whole model just to get a tokenizer (the
    random-init models and the tests need only the tokenizer).
    """
    from fairrl.assets import asset_path

    if (builtin_cache_folder(PACKAGED) / "tokenizer.json").exists():
        return load_tokenizer(PACKAGED)
    tok = gguf_tokenizer(asset_path(PACKAGED))  # DataError with the install hint when the package is missing
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def build_random_model(name: str, tokenizer, dtype: torch.dtype, device: torch.device, seed: int):
    """A randomly initialised model of architecture ``name``, created directly on ``device``."""
    from transformers import AutoModelForCausalLM

    config = arch_config(name, tokenizer)
    torch.manual_seed(seed)
    with torch.device(device):  # initialise on the device: no host copy of a 1.5B model
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id, gen.bos_token_id = (
        tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id,
    )  # fmt: skip
    return model.eval()


def load_bench_model(name: str, dtype: str, device: torch.device, seed: int = 0) -> BenchModel:
    """The benchmark model by name (see the module docstring) on ``device`` in ``dtype``."""
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if name in ARCHITECTURES:
        tok = bench_tokenizer()
        model = build_random_model(name, tok, DTYPES[dtype], device, seed)
        return BenchModel(name, tok, model, folder=None, random_init=True)
    if name not in BUILTIN_MODELS and not Path(name).is_dir():
        raise ConfigError(f"--model {name!r}: use one of {', '.join(known_models())} or a local model folder")
    tok = load_tokenizer(name)
    model = load_model(name, dtype=dtype, device=device)
    folder = str(model.config._name_or_path)  # the folder from_pretrained read (a built-in's cache copy)
    return BenchModel(name, tok, model, folder=folder, random_init=False)


def save_weights(bench: BenchModel, folder: Path) -> str:
    """Write a random-init model and its tokenizer to ``folder`` (safetensors) and point its config there.

    TRL's ``GRPOTrainer`` builds its frozen reference model with ``from_pretrained`` on
    ``model.config._name_or_path``; a model that exists only in memory needs a folder for that.
    """
    if bench.folder is not None:
        return bench.folder
    bench.model.save_pretrained(folder, safe_serialization=True)
    bench.tokenizer.save_pretrained(folder)
    bench.model.config._name_or_path = str(folder)
    bench.folder = str(folder)
    return bench.folder
