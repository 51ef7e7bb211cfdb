"""facecl embed stage."""
