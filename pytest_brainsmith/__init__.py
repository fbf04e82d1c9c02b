"""pytest-brainsmith: FINN design-space exploration as a pytest run."""
