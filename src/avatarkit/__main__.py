"""``python -m avatarkit``: the ``avatarkit`` command."""

from avatarkit.cli import app

app(prog_name="avatarkit")
