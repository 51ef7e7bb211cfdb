"""facecl train stage."""
