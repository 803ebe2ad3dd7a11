"""The model as the loop sees it: logits module, the [CLS]-only last layer, prediction."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as functional

from models_app.runtime.engines import prefix_cache_argument, prefix_logits
from training_app.engine.config import TrainingError
from training_app.engine.data import _TokenizedSplit
from training_app.engine.device import _autocast, _free_memory, _is_out_of_memory


class _LogitsModule(torch.nn.Module):
    """(input_ids, attention_mask) -> logits, for every method; DDP wraps this module."""

    def __init__(self, model: torch.nn.Module, *, prefix: bool) -> None:
        super().__init__()
        self.model = model
        self.prefix = prefix
        self._cache_argument = prefix_cache_argument(model) if prefix else "cache"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if not self.prefix:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        # The serving runtime's prefix forward (peft 0.21 and transformers 5 disagree on the
        # cache's name), so training runs the model exactly as serving will.
        return prefix_logits(
            self.model, input_ids, attention_mask, cache_argument=self._cache_argument
        )


def _last_layer_for_the_head_only(model: torch.nn.Module) -> bool:
    """Make the last encoder layer of a BERT classifier compute only the first token.

    BertForSequenceClassification reads the last layer at the first ([CLS]) position alone
    (its pooler takes ``hidden_states[:, 0]``), yet the layer computes its attention output,
    feed-forward block and layer norms for every token. Here that layer's queries, attention
    output and feed-forward run for [CLS] only, while keys and values still come from every
    token: the logits and gradients are the same (to float rounding; tested) and about an
    eighth of a six-layer model's matrix work is skipped in training and in inference. Only
    the instance's forward changes, so weights and saved artifacts are untouched. Other
    architectures, decoder or cross-attention setups, feed-forward chunking and prefix
    tuning (which feeds a cache to every layer) keep the library's forward. Returns whether
    the layer was changed.
    """
    import types

    from transformers.models.bert.modeling_bert import BertForSequenceClassification, BertLayer

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not isinstance(base, BertForSequenceClassification):
        return False
    layer = base.bert.encoder.layer[-1]
    if (
        type(layer) is not BertLayer
        or layer.is_decoder
        or layer.add_cross_attention
        or layer.chunk_size_feed_forward
        or base.config._attn_implementation not in ("sdpa", "eager")
    ):
        return False
    original = layer.forward

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        # The encoder passes encoder_hidden_states (None here) positionally.
        cross = [*args, kwargs.get("encoder_hidden_states"), kwargs.get("cache")]
        if any(value is not None for value in cross) or kwargs.get("past_key_values") is not None:
            return original(hidden_states, attention_mask, *args, **kwargs)
        attention = self.attention.self
        batch, length, _ = hidden_states.shape
        size = attention.attention_head_size
        first = hidden_states[:, :1]
        # (batch, heads, positions, head size), as the library lays them out
        query = attention.query(first).view(batch, 1, -1, size).transpose(1, 2)
        key = attention.key(hidden_states).view(batch, length, -1, size).transpose(1, 2)
        value = attention.value(hidden_states).view(batch, length, -1, size).transpose(1, 2)
        mask = attention_mask
        if mask is not None and mask.dim() == 4 and mask.shape[-2] > 1:
            mask = mask[:, :, :1, :]  # the [CLS] query's row
        context = functional.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=mask,
            dropout_p=attention.dropout.p if self.training else 0.0,
            scale=attention.scaling,
        )
        context = context.transpose(1, 2).reshape(batch, 1, -1)
        attended = self.attention.output(context, first)
        return self.output(self.intermediate(attended), attended)

    layer.forward = types.MethodType(forward, layer)
    return True


def _forward_logits(
    module: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """One forward pass; a separate function so tests can simulate running out of memory."""
    return module(input_ids, attention_mask)


def _predict(
    module: torch.nn.Module,
    split: _TokenizedSplit,
    indices: np.ndarray,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    pad_multiple: int,
) -> np.ndarray:
    """Logits (float32, one row per index, in the order given), longest texts first."""
    if len(indices) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    lengths = split.lengths[indices]
    order = np.argsort(-lengths, kind="stable")
    results: list[np.ndarray | None] = [None] * len(indices)
    was_training = module.training
    module.eval()
    position = 0
    try:
        with torch.inference_mode():
            while position < len(order):
                chunk = order[position : position + batch_size]
                input_ids, attention_mask = split.collate(indices[chunk], pad_id, pad_multiple)
                try:
                    with _autocast(device, autocast_dtype):
                        logits = _forward_logits(
                            module, input_ids.to(device), attention_mask.to(device)
                        )
                except Exception as error:
                    if not _is_out_of_memory(error):
                        raise
                    if batch_size == 1:
                        raise TrainingError(
                            "Evaluation does not fit in GPU memory even one text at a time. "
                            "Lower max_length or use a GPU with more memory."
                        ) from error
                    batch_size = max(1, batch_size // 2)
                    _free_memory(device)
                    continue
                values = logits.float().cpu().numpy()
                for row, item in enumerate(chunk):
                    results[item] = values[row]
                position += len(chunk)
    finally:
        module.train(was_training)
    return np.stack(results).astype(np.float32)


def _adalora_orthogonal_penalty(peft_model: torch.nn.Module) -> torch.Tensor | float:
    """AdaLoRA's orthogonal regularisation, which peft adds only when the model computes the
    loss itself (we compute it here, for class weights)."""
    adapter = peft_model.base_model.trainable_adapter_name
    weight = peft_model.base_model.peft_config[adapter].orth_reg_weight
    penalty: torch.Tensor | float = 0.0
    count = 0
    for name, parameter in peft_model.named_parameters():
        if ("lora_A" in name or "lora_B" in name) and adapter in name and parameter.requires_grad:
            covariance = parameter @ parameter.T if "lora_A" in name else parameter.T @ parameter
            identity = torch.eye(
                *covariance.size(), device=covariance.device, dtype=covariance.dtype
            )
            penalty = penalty + torch.norm(covariance - identity, p="fro")
            count += 1
    return weight * penalty / count if count else 0.0


def _unwrap_modules_to_save(model: torch.nn.Module) -> torch.nn.Module:
    """Replace peft's ModulesToSaveWrapper (the trained classifier copy) with the trained
    module itself, so the base model saves as a plain transformers model."""
    from peft.utils.other import ModulesToSaveWrapper

    for name, module in list(model.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            trained = module.modules_to_save[module.active_adapters[0]]
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, trained)
    return model
