"""A learning-rate schedule defined in epochs, stepped every batch.

The full-size recipes used SpeechBrain's ``CyclicLRScheduler`` with a
``step_size`` in optimiser steps tuned for batches of 32: with batches of 256
and VoxCeleb1 a 40-epoch run never left the first half cycle.
:class:`WarmupDecayScheduler` is written in epochs and converts them to steps
from the *actual* optimiser steps per epoch (per rank, after gradient
accumulation) that the Brain reads off the training loader, so one YAML gives
the same curve in epochs whatever the data size, batch size or GPU count. The
step counter is checkpointed; a run resumed with another number of steps per
epoch keeps its position in epochs.

Authors
 * sb-angcl contributors
"""

import logging

import torch
from speechbrain.utils import checkpoints

logger = logging.getLogger(__name__)


@checkpoints.register_checkpoint_hooks
class WarmupDecayScheduler:
    """Linear warm-up then exponential decay, defined in epochs.

    With ``t = step / steps_per_epoch`` (epochs done, fractional), ``W =
    warmup_epochs`` and ``E = number_of_epochs``::

        t < W:   lr = initial_lr + (lr - initial_lr) * t / W
        t >= W:  lr * (final_lr / lr) ** min((t - W) / (E - W), 1)

    The rate is set before the first batch (``apply``) and after every
    optimiser step (``on_batch_end``), so batch ``n`` (from 0) is trained at
    ``lr_at(n)``. ``steps_per_epoch`` is normally set by the Brain.

    Example
    -------
    >>> sched = WarmupDecayScheduler(lr=1e-3, final_lr=1e-5, number_of_epochs=4,
    ...                              warmup_epochs=1, initial_lr=0.0, steps_per_epoch=10)
    >>> [round(sched.lr_at(s), 6) for s in (0, 5, 10, 25, 40)]
    [0.0, 0.0005, 0.001, 0.0001, 1e-05]
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> sched.apply(opt)
    >>> opt.param_groups[0]["lr"]
    0.0
    >>> sched.on_batch_end(opt)
    >>> round(opt.param_groups[0]["lr"], 6)
    0.0001
    """

    def __init__(
        self,
        lr,
        final_lr,
        number_of_epochs,
        warmup_epochs=0.0,
        initial_lr=0.0,
        steps_per_epoch=None,
    ):
        if lr <= 0 or final_lr <= 0:
            raise ValueError(f"lr ({lr}) and final_lr ({final_lr}) must be positive")
        if number_of_epochs <= 0 or not 0 <= warmup_epochs < number_of_epochs:
            raise ValueError(
                f"need 0 <= warmup_epochs ({warmup_epochs}) < number_of_epochs "
                f"({number_of_epochs}); shorten the warm-up in the YAML"
            )
        self.lr = float(lr)
        self.final_lr = float(final_lr)
        self.number_of_epochs = float(number_of_epochs)
        self.warmup_epochs = float(warmup_epochs)
        self.initial_lr = float(initial_lr)
        self.steps_per_epoch = None
        self.step = 0
        if steps_per_epoch is not None:
            self.set_steps_per_epoch(steps_per_epoch)

    def set_steps_per_epoch(self, steps_per_epoch):
        """Fix how many optimiser steps (on this rank) make an epoch.

        Example
        -------
        >>> WarmupDecayScheduler(1e-3, 1e-5, 10).set_steps_per_epoch(0)
        Traceback (most recent call last):
         ...
        ValueError: steps_per_epoch must be at least 1, got 0 (is the training set empty?)
        """
        steps_per_epoch = int(steps_per_epoch)
        if steps_per_epoch < 1:
            raise ValueError(
                f"steps_per_epoch must be at least 1, got {steps_per_epoch} "
                "(is the training set empty?)"
            )
        self.steps_per_epoch = steps_per_epoch

    def epochs_at(self, step):
        """Epochs done after ``step`` optimiser steps."""
        if self.steps_per_epoch is None:
            raise RuntimeError(
                "WarmupDecayScheduler does not know the steps per epoch: call "
                "set_steps_per_epoch(len(train_loader)) before training (the "
                "recipes' AngularContrastiveBrain does it)."
            )
        return step / self.steps_per_epoch

    def lr_at_epoch(self, epochs):
        """The rate after ``epochs`` (fractional) epochs."""
        if epochs < self.warmup_epochs:
            return self.initial_lr + (self.lr - self.initial_lr) * epochs / self.warmup_epochs
        progress = min((epochs - self.warmup_epochs) / (self.number_of_epochs - self.warmup_epochs), 1.0)
        return self.lr * (self.final_lr / self.lr) ** progress

    def lr_at(self, step):
        """The rate for the batch after ``step`` optimiser steps."""
        return self.lr_at_epoch(self.epochs_at(step))

    def apply(self, optimizer):
        """Set the optimiser's rate to the current step's (before training)."""
        _set_lr(optimizer, self.lr_at(self.step))

    def on_batch_end(self, optimizer):
        """Count one optimiser step and set the rate for the next batch."""
        self.step += 1
        _set_lr(optimizer, self.lr_at(self.step))

    @checkpoints.mark_as_saver
    def save(self, path):
        """Save the step counter (and the steps per epoch it counts in)."""
        torch.save({"step": self.step, "steps_per_epoch": self.steps_per_epoch}, path)

    @checkpoints.mark_as_loader
    def load(self, path, end_of_epoch=False):
        """Restore the step counter; rescale it if the steps per epoch changed."""
        del end_of_epoch
        data = torch.load(path)
        step, saved_spe = int(data["step"]), data.get("steps_per_epoch")
        if saved_spe and self.steps_per_epoch and saved_spe != self.steps_per_epoch:
            new_step = round(step * self.steps_per_epoch / saved_spe)
            logger.info(
                "Learning-rate schedule: %d steps per epoch in the checkpoint, %d now "
                "(another GPU count or batch size); step %d becomes %d (same epoch "
                "position).", saved_spe, self.steps_per_epoch, step, new_step,
            )
            step = new_step
        self.step = step


def _set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr
