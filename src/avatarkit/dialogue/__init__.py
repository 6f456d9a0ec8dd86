"""avatarkit.dialogue: the conversation layer.

- :mod:`~avatarkit.dialogue.manager`: ``DialogueManager`` (one turn: slots → handler or chat model
  → stored state) and ``Persona``.
- :mod:`~avatarkit.dialogue.store`: ``InMemoryStore``, ``JsonFileStore``, ``SQLiteStore``.
- :mod:`~avatarkit.dialogue.history`: chat messages cut to a token budget.
- :mod:`~avatarkit.dialogue.handler`: intent handlers and ``SlotForm``.
- :mod:`~avatarkit.dialogue.slot`: date, time, e-mail, phone and name extractors.
- :mod:`~avatarkit.dialogue.local_chat`: ``LocalChatModel``, the offline default chat model.
- :mod:`~avatarkit.dialogue.sentences`: streaming sentence splitter for the voice.
- :mod:`~avatarkit.dialogue.script`: ``write_script`` ("Introduce yourself" → speech script).

Nothing is imported here, so ``import avatarkit.dialogue`` stays cheap.
"""
