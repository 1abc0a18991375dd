"""The reversible sampler: EDICT and DDIM steps, exact inversion, the precision of the latent pair."""
