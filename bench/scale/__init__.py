"""Scale out: split a matrix into shards (CI jobs, GPUs, SLURM array elements) and merge their runs."""
