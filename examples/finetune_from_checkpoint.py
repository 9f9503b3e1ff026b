"""Fine-tune from a checkpoint: train and save with ``fit(checkpoint_dir=...)``, load it back, train on.

The first run records its model in the checkpoint (``model_record``), so ``load_model`` rebuilds the
architecture, params and model state from the file alone; the second run starts from them with a new,
smaller learning rate. ``load_checkpoint`` reads the same file at a lower level (params, optimizer state,
step, key, metadata). About 20 s on two CPU cores (``TINYFN_EXAMPLE_QUICK=1``: fewer images).

    python examples/finetune_from_checkpoint.py
"""

import os
import tempfile
from pathlib import Path

import jax

from tinyfn import data, models, train

QUICK = os.environ.get("TINYFN_EXAMPLE_QUICK") == "1"
N_TRAIN, N_TEST = (1024, 500) if QUICK else (8000, 2000)


def main():
    train_set, test_set = data.load_embedded("train"), data.load_embedded("test")
    mean, std = data.normalization(train_set.images)
    x, y = data.normalize(train_set.images[:N_TRAIN], mean, std), train_set.labels[:N_TRAIN]
    test = (data.normalize(test_set.images[:N_TEST], mean, std), test_set.labels[:N_TEST])

    model = models.lenet5()
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    with tempfile.TemporaryDirectory() as run_dir:
        record = {"model": train.model_record(model, (1, 28, 28))}  # what load_model rebuilds the model from
        train.fit(
            model,
            params,
            (x, y),
            epochs=1,
            batch_size=64,
            optimizer=train.sgd(0.05, momentum=0.9),
            key=jax.random.key(1),
            checkpoint_dir=run_dir,
            metadata=record,
            quiet=True,
        )
        ckpt = train.load_checkpoint(Path(run_dir) / train.CHECKPOINT_NAME)
        print(f"checkpoint: step {ckpt.step}, {len(jax.tree_util.tree_leaves(ckpt.params))} param tensors")
        loaded = train.load_model(run_dir)  # (model, params, metadata), and .model_state

    before = train.evaluate(loaded.model, loaded.params, test, model_state=loaded.model_state)[1]
    result = train.fit(
        loaded.model,
        loaded.params,
        (x, y),
        epochs=1,
        batch_size=64,
        optimizer=train.sgd(0.01, momentum=0.9),
        key=jax.random.key(2),
        model_state=loaded.model_state,
        quiet=True,
    )
    after = train.evaluate(loaded.model, result.params, test, model_state=result.model_state)[1]
    print(f"finetune_from_checkpoint: test accuracy {before:.4f} after loading, {after:.4f} after fine-tuning")


if __name__ == "__main__":
    main()
