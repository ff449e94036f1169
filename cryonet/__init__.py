"""CryoNet companion: multi-modal debris-covered glacier mapping, reproducibly.

The package is organised one module per step of the data flow (raw inputs -> aligned grid -> feature stack ->
tiles -> model -> predictions -> outlines, tables and figures); see the README for the map.
"""

from cryonet.constants import CLASSES, LAYER_GROUPS, S2_BANDS

__all__ = ["CLASSES", "LAYER_GROUPS", "S2_BANDS", "__version__"]
__version__ = "0.1.0"
