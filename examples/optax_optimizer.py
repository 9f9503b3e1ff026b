"""An optax optimizer in ``fit``: any ``optax.GradientTransformation`` plugs in where tinyfn's own do.

Here ``optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-4))`` with a warm-up
cosine schedule trains LeNet-5; its state is checkpointed and resumed like tinyfn's. tinyfn itself never
imports optax (``pip install optax``, or the ``dev`` extra). About 20 s on two CPU cores
(``TINYFN_EXAMPLE_QUICK=1``: fewer images).

    python examples/optax_optimizer.py
"""

import os

import jax
import optax

from tinyfn import data, models, train

QUICK = os.environ.get("TINYFN_EXAMPLE_QUICK") == "1"
N_TRAIN, N_TEST, EPOCHS = (1024, 500, 1) if QUICK else (8000, 2000, 3)
BATCH = 64


def main():
    train_set, test_set = data.load_embedded("train"), data.load_embedded("test")
    mean, std = data.normalization(train_set.images)
    x, y = data.normalize(train_set.images[:N_TRAIN], mean, std), train_set.labels[:N_TRAIN]
    test = (data.normalize(test_set.images[:N_TEST], mean, std), test_set.labels[:N_TEST])

    steps = EPOCHS * (N_TRAIN // BATCH)
    schedule = optax.warmup_cosine_decay_schedule(0.0, 3e-3, warmup_steps=steps // 10, decay_steps=steps)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-4))

    model = models.lenet5()
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    params, history = train.fit(
        model, params, (x, y), epochs=EPOCHS, batch_size=BATCH, optimizer=optimizer, key=jax.random.key(1), quiet=True
    )
    _, accuracy, _ = train.evaluate(model, params, test)
    print(f"optax_optimizer: train loss {history['train_loss'][-1]:.4f}, test accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main()
