"""FieldWard: a self-hosted security platform for IoT and OT networks.

Data flows one way through the sub-packages:
capture -> decode -> protocols -> (inventory, detect) -> store -> console.
"""

from fieldward.errors import CaptureFormatError, FieldWardError

__version__ = "0.1.0"

__all__ = ["CaptureFormatError", "FieldWardError", "__version__"]
