"""facecl align stage."""
