"""avatarkit.providers."""
