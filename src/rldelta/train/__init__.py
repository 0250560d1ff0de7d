"""Training harness: models, verifiable tasks and rewards, evaluation, TRL trainers. Submodules load lazily."""
