"""A CNN of your own with batch normalisation: build it with ``serial``, init params and state, fit, evaluate.

Shows ``L.init_with_state`` (the params and batch norm's running statistics), ``fit`` (which trains the
statistics too and returns them as ``result.model_state``) and ``evaluate`` in evaluation mode with them.
On the Fashion-MNIST subset shipped inside tinyfn; about 30 s on two CPU cores, a few seconds with
``TINYFN_EXAMPLE_QUICK=1``.

    python examples/custom_cnn_batchnorm.py
"""

import os

import jax

from tinyfn import data, layers as L, train

QUICK = os.environ.get("TINYFN_EXAMPLE_QUICK") == "1"
N_TRAIN, N_TEST, EPOCHS = (1024, 500, 1) if QUICK else (8000, 2000, 3)


def main():
    train_set, test_set = data.load_embedded("train"), data.load_embedded("test")
    mean, std = data.normalization(train_set.images)
    x, y = data.normalize(train_set.images[:N_TRAIN], mean, std), train_set.labels[:N_TRAIN]
    x_test, y_test = data.normalize(test_set.images[:N_TEST], mean, std), test_set.labels[:N_TEST]

    # fmt: off
    model = L.serial(
        L.Conv2D(16, 3, padding=1, use_bias=False), L.BatchNorm2D(), L.ReLU(), L.MaxPool2D(2),  # 16 × 14 × 14
        L.Conv2D(32, 3, padding=1, use_bias=False), L.BatchNorm2D(), L.ReLU(), L.MaxPool2D(2),  # 32 × 7 × 7
        L.GlobalAvgPool2D(), L.Linear(10),
    )
    # fmt: on
    print(L.summary(model, (None, 1, 28, 28)))
    _, params, state = L.init_with_state(model, jax.random.key(0), (None, 1, 28, 28))

    result = train.fit(
        model,
        params,
        (x, y),
        epochs=EPOCHS,
        batch_size=32,
        optimizer=train.adam(1e-2),
        key=jax.random.key(1),
        model_state=state,
        quiet=True,
    )
    loss, accuracy, _ = train.evaluate(model, result.params, (x_test, y_test), model_state=result.model_state)
    print(f"custom_cnn_batchnorm: test loss {loss:.4f}, test accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main()
