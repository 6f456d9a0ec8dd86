"""avatarkit.animation."""
