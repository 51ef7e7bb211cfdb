"""facecl verify stage."""
