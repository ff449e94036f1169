"""Feature engineering: one module per input family (see :data:`cryonet.constants.LAYER_GROUPS`)."""
