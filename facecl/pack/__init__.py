"""facecl pack stage."""
