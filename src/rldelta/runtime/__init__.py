"""What every floor runs on and none of them computes: errors, atomic writes, progress, the output folder's lock,
worker lifetime, thread counts, malloc tuning, the Ray cluster, and the names of the files rldelta writes."""
