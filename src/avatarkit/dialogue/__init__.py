"""avatarkit.dialogue."""
