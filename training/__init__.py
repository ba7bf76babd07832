"""Training for fer-export (needs ``pip install 'fer-export[train]'``).

``training.config`` (recipes and the run config), ``training.data`` (folders, loaders),
``training.augment`` (seed transforms, batch augmentation), ``training.engine`` (optimizer,
schedule, ``train_one_epoch``, ``evaluate``), ``training.train`` (``main(config)``),
``training.plots`` and ``training.cli`` (``fer-train``).
"""
