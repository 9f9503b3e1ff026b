"""Data-parallel training over a device mesh: ``fit(..., mesh=data_mesh(n))``.

Each batch is split over the mesh's ``data`` axis, params and optimizer state are replicated, and XLA
all-reduces the gradients; the result equals one device's up to float32 summation order. On a CPU the
devices are simulated: ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` must be set before jax is
imported, as below (it shares the same cores, so it shows the mechanism, not a speed-up). On GPUs or TPUs,
drop the flag and use ``data_mesh()`` for all devices. About 20 s on two CPU cores
(``TINYFN_EXAMPLE_QUICK=1``: fewer images).

    python examples/data_parallel.py
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()

import jax  # after XLA_FLAGS is set

from tinyfn import data, models, train

QUICK = os.environ.get("TINYFN_EXAMPLE_QUICK") == "1"
N_TRAIN, N_TEST = (1024, 500) if QUICK else (8000, 2000)


def main():
    train_set, test_set = data.load_embedded("train"), data.load_embedded("test")
    mean, std = data.normalization(train_set.images)
    x, y = data.normalize(train_set.images[:N_TRAIN], mean, std), train_set.labels[:N_TRAIN]
    test = (data.normalize(test_set.images[:N_TEST], mean, std), test_set.labels[:N_TEST])

    mesh = train.data_mesh(4)  # the first 4 devices, one axis named "data"
    model = models.lenet5()
    _, params = model.init(jax.random.key(0), (None, 1, 28, 28))
    params, _ = train.fit(
        model,
        params,
        (x, y),
        epochs=1,
        batch_size=128,
        optimizer=train.sgd(0.05, momentum=0.9),
        key=jax.random.key(1),
        mesh=mesh,
        quiet=True,
    )  # 128 = 4 devices × 32
    _, accuracy, _ = train.evaluate(model, params, test)
    print(f"data_parallel: {mesh.devices.size} devices, test accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main()
