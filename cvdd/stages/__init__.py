"""The six CV-DD stages, in order. Each is `run_<stage>(ctx, cfg_hash) -> metrics dict`."""
