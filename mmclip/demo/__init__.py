"""The CPU demos (``mmclip demo``): :mod:`.clip` (the dual encoder's three stages) and :mod:`.lusifer`.

With the CLI, the only part of the library that imports ``data_pipelines`` (the synthetic corpus)
and ``eval`` (the held-out scores).
"""
