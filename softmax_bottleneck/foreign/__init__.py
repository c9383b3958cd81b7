"""Models trained elsewhere, read without running their code.

- :mod:`.archive`: the restricted reader of any ``torch.save`` archive (lists a pickle's imports
  with ``pickletools``, resolves only an allow-list, refuses the rest with one line);
- :mod:`.official`: the official GRU4Rec's ``savemodel`` file (weights, item ids, settings).

Still to come (issue 16): RecBole GRU4Rec and SASRec files, adapters that replay held-out sessions
as each framework does, and ``--checkpoint-format`` in every tool.
"""
