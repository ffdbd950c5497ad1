# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
"""GradCache: full-batch contrastive gradients with micro-batch activation memory."""

import contextlib

import torch

from modeling_sista import total_loss


def _rng_state() -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None


def _set_rng_state(state: tuple):
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def gradient_cache_backward(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    chunk_size: int,
    backward=torch.Tensor.backward,
    no_sync=contextlib.nullcontext,
) -> dict[str, torch.Tensor]:
    r"""
    Backpropagates the full-batch SISTA loss while holding the activations of one `chunk_size` micro-batch at a
    time (GradCache, Gao et al. 2021). SIA is not a sum over micro-batches, so:

    1. embed every micro-batch without gradients, recording the RNG state so that dropout replays identically;
    2. compute SIA on the whole batch from those embeddings (gathered across processes as usual) and backpropagate
       it to the embeddings, which caches `dL/d(embeddings)` and gives the logit scale its gradient;
    3. re-run each micro-batch with gradients and backpropagate `<embeddings, cached gradient>` plus its share of
       STA, which is a per-sample mean and therefore additive.

    The parameter gradients equal those of one pass over the whole batch (up to float rounding).

    Args:
        model: the (possibly DDP-wrapped) [`SistaModel`]; its `module` or itself must expose `compute_sia_loss`.
        inputs: a collated batch (`input_ids`, `attention_mask`, `pixel_values`, optional `token_type_ids`,
            `report_embeds`).
        chunk_size: micro-batch size of the passes with gradients.
        backward: how to backpropagate a loss (e.g. `accelerator.backward`).
        no_sync: a context factory that turns off gradient synchronisation (e.g. `accelerator.no_sync(model)`);
            every micro-batch but the last runs under it.

    Returns:
        dict with the detached `loss`, `loss_sia` and `loss_sta` (None when its weight is 0) of the whole batch.
    """
    sista = model.module if hasattr(model, "module") else model
    config = sista.config
    model_inputs = {key: value for key, value in inputs.items() if key != "return_loss"}
    batch_size = model_inputs["input_ids"].shape[0]
    chunks = [
        {key: value[start : start + chunk_size] for key, value in model_inputs.items() if key != "report_embeds"}
        for start in range(0, batch_size, chunk_size)
    ]
    use_sta = config.sta_weight > 0
    use_sia = config.sia_weight > 0

    rng_states, image_embeds, text_embeds = [], [], []
    with torch.no_grad():
        for chunk in chunks:
            rng_states.append(_rng_state())
            outputs = sista(**chunk, return_loss=False)
            image_embeds.append(outputs.image_embeds)
            text_embeds.append(outputs.text_embeds)
    rng_after_first_pass = _rng_state()

    image_embeds = torch.cat(image_embeds).requires_grad_(use_sia)
    text_embeds = torch.cat(text_embeds).requires_grad_(use_sia)
    loss_sia = None
    if use_sia:
        loss_sia = sista.compute_sia_loss(image_embeds, text_embeds, model_inputs.get("report_embeds"))
        backward(config.sia_weight * loss_sia)

    loss_sta_total = torch.zeros(())
    start = 0
    for index, (chunk, rng_state) in enumerate(zip(chunks, rng_states)):
        _set_rng_state(rng_state)
        size = chunk["input_ids"].shape[0]
        is_last = index == len(chunks) - 1
        with contextlib.nullcontext() if is_last else no_sync():
            # `output_token_patch_weights` makes the forward compute STA without SIA (no gather, no logits loss)
            outputs = model(**chunk, return_loss=False, output_token_patch_weights=use_sta)
            surrogate = (
                # the logit scale got its gradient in step 2; touching it keeps DDP's reducer expecting every parameter
                outputs.logits_per_text.sum() * 0.0
            )
            if use_sia:
                surrogate = surrogate + (outputs.image_embeds * image_embeds.grad[start : start + size]).sum()
                surrogate = surrogate + (outputs.text_embeds * text_embeds.grad[start : start + size]).sum()
            if use_sta:
                surrogate = surrogate + config.sta_weight * outputs.loss_sta * (size / batch_size)
                loss_sta_total = loss_sta_total + outputs.loss_sta.detach().float() * (size / batch_size)
            backward(surrogate)
        start += size
    _set_rng_state(rng_after_first_pass)

    loss_sta = loss_sta_total if use_sta else None
    loss_sia = None if loss_sia is None else loss_sia.detach()
    loss = total_loss(config.sia_weight, loss_sia, config.sta_weight, loss_sta)
    return {"loss": loss, "loss_sia": loss_sia, "loss_sta": loss_sta}
