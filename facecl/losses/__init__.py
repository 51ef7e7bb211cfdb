"""Center-loss family, softmax and margin heads (registry-selected)."""
