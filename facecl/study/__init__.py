"""facecl study stage."""
