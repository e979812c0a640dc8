"""Model code diffusers lacks: checkpoint converters for the original Wan layouts, FlashVSR."""
