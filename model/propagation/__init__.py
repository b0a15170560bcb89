"""STM-style propagation network of MiVOS (memory encoder, query encoder, top-k memory read, decoder)."""
