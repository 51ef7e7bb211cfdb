"""facecl: raw face photos to deployable face embeddings, trained with the center-loss family."""

__version__ = "0.1.0"
