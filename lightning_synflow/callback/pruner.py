"""Running the pruner inside a fit: what it reads (an example input, or training batches and the loss), and its result.

``SynFlowPruning`` decides when to prune and where the masks go; :func:`run_pruner` scores and prunes the
LightningModule on this process and returns the masks, or the error that stopped it, so the callback can
tell every rank.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, Optional, Union

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningModule, Trainer

from lightning_synflow.callback.arguments import CallbackOptions
from lightning_synflow.pruning.api import prune_with
from lightning_synflow.pruning.inputs import ExampleInputError
from lightning_synflow.pruning.loop import ScoringData
from lightning_synflow.pruning.settings import DATA_METHODS, PruningSettings


@dataclass
class Pruned:
    """What the pruner found on this process.

    Attributes:
        masks: boolean masks (True = kept) keyed by qualified parameter name.
        example_input: the example input it ran the model on (SynFlow), or None.
        seconds: how long it took.
    """

    masks: dict[str, torch.Tensor]
    example_input: Any
    seconds: float


#: What rank 0 tells every rank after pruning, the masks' names (the masks follow as packed bits) or the error.
Outcome = Union[list[str], Exception]


def example_input(pl_module: LightningModule, options: CallbackOptions) -> Any:
    """A batch-shaped example: the module's ``example_input_array``, else zeros of ``input_shape``; else None."""
    example = pl_module.example_input_array
    if example is None and options.input_shape is not None:
        example = torch.zeros(1, *options.input_shape)
    return example


def run_pruner(
    trainer: Trainer,
    pl_module: LightningModule,
    settings: PruningSettings,
    options: CallbackOptions,
    start: Optional[dict[str, torch.Tensor]],
) -> Union[Pruned, Exception]:
    """Prune ``pl_module`` here from the masks ``start``: the masks, or the error that stopped it.

    The error is a ``MisconfigurationException`` where the user can fix it (the message says how).
    """
    began = time.perf_counter()
    failure: Exception
    try:
        data, batches = _scoring_data(trainer, pl_module, settings, options)
        progress = _progress(trainer, options)
        masks = prune_with(pl_module, settings, data, progress=progress, batches=batches, masks=start)
    except ExampleInputError as error:
        tried = error.shapes[0] if len(error.shapes) == 1 else error.shapes
        failure = MisconfigurationException(
            f"SynFlowPruning could not run the model on an input of shape {tried} built from "
            f"{_input_source(pl_module)}: {error.cause}. Set `example_input_array` (or `input_shape`, "
            "without the batch dimension) to the shape of one batch the model's forward accepts."
        )
        failure.__cause__ = error
        return failure
    except (TypeError, ValueError, FloatingPointError) as error:
        failure = MisconfigurationException(f"SynFlowPruning could not prune: {error}")
        failure.__cause__ = error
        return failure
    except Exception as error:
        return error
    return Pruned(masks, data.example_input, time.perf_counter() - began)


def _scoring_data(
    trainer: Trainer, pl_module: LightningModule, settings: PruningSettings, options: CallbackOptions
) -> tuple[ScoringData, Optional[list[Any]]]:
    method = settings.method
    if method == "synflow":
        example = example_input(pl_module, options)
        if example is None:
            raise MisconfigurationException(
                "SynFlowPruning needs the input shape: set `self.example_input_array = torch.zeros(1, *shape)` in "
                "your LightningModule's __init__ (Lightning's convention), or pass "
                "`SynFlowPruning(input_shape=[...])` (without the batch dimension)."
            )
        return ScoringData(example_input=example), None
    if method not in DATA_METHODS:
        return ScoringData(), None
    if not pl_module.automatic_optimization:
        raise MisconfigurationException(
            f"SynFlowPruning(method={method!r}) scores with the LightningModule's training_step "
            "loss, but with automatic_optimization=False training_step steps the optimizers itself. Use "
            "method='synflow', 'magnitude' or 'random', or prune before fit with "
            "lightning_synflow.prune(model, ..., batches=..., batch_loss=...)."
        )
    loader = trainer.fit_loop._data_source.dataloader()
    if loader is None:
        raise MisconfigurationException(f"SynFlowPruning(method={method!r}) needs a train dataloader.")
    batches = [_transfer(pl_module, batch) for batch in islice(_iterate(loader), options.score_batches)]
    return ScoringData(batch_loss=_training_step_loss), batches


def _progress(trainer: Trainer, options: CallbackOptions) -> bool:
    progress = options.progress
    if progress is None:
        progress = trainer.progress_bar_callback is not None
    return bool(progress) and trainer.is_global_zero


def _input_source(pl_module: LightningModule) -> str:
    if pl_module.example_input_array is not None:
        return "the LightningModule's `example_input_array`"
    return "`input_shape`"


def _iterate(loader: Any) -> Iterator[Any]:
    """Iterate a dataloader, or the first of several (Lightning's CombinedLoader / sequences)."""
    if isinstance(loader, (list, tuple)):
        loader = loader[0]
    elif isinstance(loader, dict):
        loader = next(iter(loader.values()))
    return iter(loader)


def _transfer(pl_module: LightningModule, batch: Any) -> Any:
    """The batch as ``training_step`` sees it: through the module's batch-transfer hooks."""
    batch = pl_module.on_before_batch_transfer(batch, 0)
    batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
    return pl_module.on_after_batch_transfer(batch, 0)


def _training_step_loss(pl_module: Any, batch: Any) -> torch.Tensor:
    """The loss ``training_step`` returns on ``batch``, with its ``self.log`` calls silenced."""
    silenced = {name: pl_module.__dict__.get(name) for name in ("log", "log_dict")}
    pl_module.log = pl_module.log_dict = _ignore
    try:
        output = pl_module.training_step(batch, 0)
    finally:
        for name, value in silenced.items():
            if value is None:
                del pl_module.__dict__[name]
            else:
                pl_module.__dict__[name] = value
    loss = output.get("loss") if isinstance(output, dict) else output
    if not isinstance(loss, torch.Tensor):
        raise MisconfigurationException(
            "SynFlowPruning scores SNIP/GraSP with the loss training_step returns (a tensor, or a dict with 'loss'); "
            f"it returned {type(output).__name__}."
        )
    return loss


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None
