"""Device inventory: devices built from passive evidence (see docs/inventory.md)."""

from fieldward.inventory.builder import Inventory, InventoryBuilder, InventorySettings
from fieldward.inventory.model import Device, DeviceType

__all__ = ["Device", "DeviceType", "Inventory", "InventoryBuilder", "InventorySettings"]
