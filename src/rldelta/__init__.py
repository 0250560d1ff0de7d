"""rldelta: measure how RL fine-tuning changes a language model's weights."""

import os

# OpenMP threads that spin while they wait take the cores other processes need: a diff beside two training runs
# took 562 s instead of 13 s. Passive waiting costs little to a process alone (threads.py); set before torch is
# imported, which loads the OpenMP runtime that reads it. A value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
