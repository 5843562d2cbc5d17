"""Detection engines that turn protocol events and flows into alerts (issue 5)."""
