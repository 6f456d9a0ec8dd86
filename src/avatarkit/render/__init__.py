"""avatarkit.render."""
