"""Training and fine-tuning DECSC: the loop behind ``hsidenoise train`` and ``hsidenoise finetune``.

One loop serves both (:func:`fit` from a fresh model, :func:`finetune` from saved weights at a lower learning
rate). Per step: a batch from :class:`hsidenoise.training.data.PatchSampler` (noise, low-rank front end, random windows,
each normalised as at inference), the model's output compared with the clean window by MSE (or log-MSE), Adam,
and the learning rate halved every ``lr_step_epochs`` epochs (the paper's schedule). bf16 autocast on CUDA only.
The subspace DECSC trains on eigen-domain pairs instead (:mod:`hsidenoise.training.subspace_pairs`), with its own loss and
validation (:mod:`~hsidenoise.training.families`).

One module per concern:

- :mod:`~hsidenoise.training.config`: :class:`TrainConfig`, what a run needs (its own module: the loop, the
  checkpoints and the card all use the type);
- :mod:`~hsidenoise.training.loop`: :func:`fit`, :func:`finetune` and the loop itself;
- :mod:`~hsidenoise.training.validation`: after every epoch the model denoises fixed noisy crops of the
  validation cubes (never trained on) as at inference, and its MPSNR is reported next to the front end's;
- :mod:`~hsidenoise.training.checkpoints`: a checkpoint (model, optimizer, scheduler, sampler and torch random
  states, position, elapsed time) is written atomically to ``out_dir/checkpoint.pt`` every
  ``checkpoint_every_s`` seconds and at the end; ``resume=True`` continues from it exactly: N steps in one go
  and N/2 + N/2 with a restart in between give bit-identical weights;
- :mod:`~hsidenoise.training.card`: the final weights go to ``out_dir/<name>.safetensors`` with a JSON model
  card;
- :mod:`~hsidenoise.training.processes`: under ``torchrun`` (``WORLD_SIZE`` > 1) the loop runs data-parallel:
  one process per device (gloo on CPU, nccl on CUDA), ``DistributedDataParallel``, one sampler stream per rank,
  and only rank 0 validates and writes. ``batch_size`` is per process;
- :mod:`~hsidenoise.training.families`: what the loop does differently for the subspace DECSC.

The library never prints: progress goes to the ``progress`` callback as :class:`TrainProgress` events.
"""

from hsidenoise.training.checkpoints import CHECKPOINT_NAME
from hsidenoise.training.config import DEFAULT_LR, FINETUNE_LR, LOSSES, TrainConfig
from hsidenoise.training.loop import (
    ProgressCallback,
    TrainProgress,
    TrainResult,
    finetune,
    fit,
)
from hsidenoise.training.validation import VALIDATION_SEED, ValidationCase, ValidationScore, prepare_validation, validate

__all__ = [
    "CHECKPOINT_NAME",
    "DEFAULT_LR",
    "FINETUNE_LR",
    "LOSSES",
    "VALIDATION_SEED",
    "ProgressCallback",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "ValidationCase",
    "ValidationScore",
    "finetune",
    "fit",
    "prepare_validation",
    "validate",
]
