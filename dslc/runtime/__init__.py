"""Training runtime: data, the loop, checkpoints, run folders, weights and sampling (torch is
imported here, never by `dslc check`)."""
