"""avatarkit: animated AI avatars that answer in their own voice, lips in sync."""
