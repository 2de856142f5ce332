"""`strategy = fsdp`: each process keeps a shard of the weights, gradients and optimizer state.

Torch's FSDP2 (`torch.distributed.fsdp.fully_shard`) turns a module's parameters into DTensors
sharded along their first dimension across the processes; a forward or backward pass gathers a
unit's full weights just before it runs and frees them after, and gradients are averaged and
scattered back to the shards (reduce-scatter), so each process's optimizer updates its own shard.
It runs on gloo with CPU tensors (this repository's tests) and on NCCL with GPUs (not measured yet).

Checkpoints do not depend on the strategy: the weights are gathered into a full state dict (on
rank 0, on the CPU) and the optimizer state into the int-keyed form of `Optimizer.state_dict()`,
so a run folder written under FSDP reads as one process's, and any checkpoint (one process's,
DDP's, FSDP's of any number of processes) resumes under FSDP.
"""
from __future__ import annotations

import torch

# torch.distributed's fsdp, checkpoint and tensor packages take seconds to import: they are imported
# by the functions that use them, which only a sharded run calls, not by every `dslc train`.


def shard(model: torch.nn.Module) -> None:
    """Shard `model` in place: each repeated block (a child of an nn.ModuleList: a `for` loop's or
    `repeat`'s blocks, a transformer's layers) is a unit of its own, gathered only while it runs,
    and the model itself is the root unit holding every other parameter."""
    from torch.distributed.fsdp import fully_shard
    for module in list(model.modules()):
        if isinstance(module, torch.nn.ModuleList):
            for block in module:
                if any(True for _ in block.parameters()):
                    fully_shard(block)
    fully_shard(model)


def full_weights(model: torch.nn.Module) -> dict:
    """The model's state dict with whole tensors, on the CPU, in rank 0 (the other processes get
    an empty dict). Every process must call it: the shards are gathered."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_weights(model: torch.nn.Module, state: dict) -> None:
    """Load rank 0's whole-tensor `state` into the sharded `model` (each process keeps its shard;
    what the others pass is not read). Every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


def gather_optimizer_state(state_dict: dict) -> dict:
    """An optimizer's state dict with its sharded tensors (momentum, Adam's moments) made whole, on
    the CPU: the form one process's optimizer has. Every process must call it. The tensors are gathered
    in the order of their indices and names: the state's own order is that of the first step, or of a
    loaded checkpoint's file, which may differ between the processes."""
    state = {}
    for i in sorted(state_dict["state"]):
        st = state_dict["state"][i]
        state[i] = {k: _whole(st[k]) for k in sorted(st)}
    return {"state": state, "param_groups": state_dict["param_groups"]}


def shard_optimizer_state(state_dict: dict, optimizer: torch.optim.Optimizer) -> dict:
    """A whole-tensor optimizer state dict (one process's, or `gather_optimizer_state`'s) cut into
    this process's shards, to load into the optimizer of the sharded parameters: each state tensor of
    a parameter's shape takes that parameter's sharding. No communication: every process has it all."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for i, st in state_dict["state"].items():
        p = params[int(i)]
        state[i] = {k: _like(v, p) for k, v in st.items()}
    return {"state": state, "param_groups": state_dict["param_groups"]}


def _whole(value):
    from torch.distributed.tensor import DTensor
    if isinstance(value, DTensor):
        return value.full_tensor().cpu()
    return value


def _like(value, param):
    from torch.distributed.tensor import DTensor, distribute_tensor
    if isinstance(param, DTensor) and torch.is_tensor(value) and not isinstance(value, DTensor) and \
            tuple(value.shape) == tuple(param.shape):
        return distribute_tensor(value.to(param.device), param.device_mesh, param.placements, src_data_rank=None)
    return value


def set_gradient_sync(model: torch.nn.Module, sync: bool) -> None:
    """Whether the next backward pass averages and scatters the gradients (off between the batches
    that `accumulate` adds up before an optimizer step)."""
    model.set_requires_gradient_sync(sync)


__all__ = ["full_weights", "gather_optimizer_state", "load_full_weights", "set_gradient_sync", "shard",
           "shard_optimizer_state"]
