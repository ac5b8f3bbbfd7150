"""Ray entry points: where the dcls_core stages run (actor pools, Ray Train) and where outputs go."""
