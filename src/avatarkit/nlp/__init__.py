"""avatarkit.nlp."""
