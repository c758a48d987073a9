"""Test-only: ``kill -9`` a ``mia-bench fit`` process of itself at a chosen phase of epoch 1.

Put this folder on ``PYTHONPATH`` and set ``MIA_KILL_AT`` to one of

* ``epoch``: during the training batches of epoch 1;
* ``signals``: while epoch 1's signals file is being written (half of it on disk);
* ``last``: after ``epoch_001.ckpt`` is in place, before ``last.ckpt`` points at it;
* ``commit``: after both checkpoint files, before epoch 1's metrics reach MLflow;
* ``diskfull``: the disk fills up while ``epoch_001.ckpt`` is written (half of it is on
  disk when the write fails with ENOSPC); the process is not killed but fails.

The process sends itself SIGKILL at that point, exactly as ``kill -9`` would.
"""

import os
import signal

PHASE = os.environ.get("MIA_KILL_AT")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install() -> None:
    from mia_bench.classifier import Classifier
    from mia_bench.store import artifacts, checkpoints
    from mia_bench.tracking import BufferedMLFlowLogger

    if PHASE == "epoch":
        step = Classifier.training_step

        def training_step(self, batch, batch_idx):
            if self.current_epoch == 1 and batch_idx == 2:
                _die()
            return step(self, batch, batch_idx)

        Classifier.training_step = training_step
    elif PHASE == "signals":
        write = artifacts.atomic_write

        def atomic_write(path, fn):
            if path.name == "epoch_001.npz":
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(tmp, "wb") as f:
                    fn(f)
                    f.truncate(f.tell() // 2)
                _die()
            return write(path, fn)

        artifacts.atomic_write = atomic_write
    elif PHASE == "last":
        link = checkpoints.link_last

        def link_last(dirpath, source):
            if source.name == "epoch_001.ckpt":
                _die()
            return link(dirpath, source)

        checkpoints.link_last = link_last
    elif PHASE == "commit":
        commit = BufferedMLFlowLogger.commit

        def commit_or_die(self, epoch=None):
            if epoch == 1:
                _die()
            return commit(self, epoch)

        BufferedMLFlowLogger.commit = commit_or_die
    elif PHASE == "diskfull":
        import errno

        from lightning.pytorch import Trainer

        save = Trainer.save_checkpoint

        def save_checkpoint(self, filepath, *args, **kwargs):
            if "epoch_001" in str(filepath):
                save(self, filepath, *args, **kwargs)
                with open(filepath, "rb+") as f:
                    f.truncate(f.seek(0, 2) // 2)
                raise OSError(errno.ENOSPC, "No space left on device", str(filepath))
            return save(self, filepath, *args, **kwargs)

        Trainer.save_checkpoint = save_checkpoint


if PHASE:
    _install()
